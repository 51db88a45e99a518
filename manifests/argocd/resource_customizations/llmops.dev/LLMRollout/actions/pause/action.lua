-- Hold at the current step.
obj.spec.paused = true
return obj
