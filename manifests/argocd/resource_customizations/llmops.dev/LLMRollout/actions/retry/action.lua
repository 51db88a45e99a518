-- Start an aborted or failed rollout again from its first step.
obj.spec.retry = (obj.spec.retry or 0) + 1
obj.spec.abort = false
return obj
