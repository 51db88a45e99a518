-- All traffic back to the stable revision, then remove the new one.
obj.spec.abort = true
return obj
