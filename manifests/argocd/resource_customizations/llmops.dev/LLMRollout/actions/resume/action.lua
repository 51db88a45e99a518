-- Undo a pause; or continue past an indefinite pause step or an inconclusive analysis.
if obj.spec.paused == true then
  obj.spec.paused = false
else
  obj.spec.resume = (obj.spec.resume or 0) + 1
end
return obj
