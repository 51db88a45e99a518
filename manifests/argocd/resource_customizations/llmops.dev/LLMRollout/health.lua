-- Argo CD health of an LLMRollout: Progressing while it runs, Suspended when paused, Degraded when aborted or
-- failed, Healthy when the new revision is stable.
local hs = {status = "Progressing", message = "Waiting for the operator to start the rollout"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local phase = obj.status.phase
local message = obj.status.message or ""
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Aborted" or phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Paused" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
if message == "" then
  message = "Rollout is " .. phase
end
hs.message = message
return hs
