-- Argo CD health of an LLMDeployment, from its conditions (Kubernetes API conventions).
local hs = {status = "Progressing", message = "Waiting for the operator to reconcile"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local found = {}
for _, condition in ipairs(obj.status.conditions) do
  found[condition.type] = condition
end
local function said(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.reason .. ": " .. condition.message
  end
  return condition.reason
end
if found["Degraded"] ~= nil and found["Degraded"].status == "True" then
  hs.status = "Degraded"
  hs.message = said(found["Degraded"])
elseif found["Progressing"] ~= nil and found["Progressing"].status == "True" then
  hs.status = "Progressing"
  hs.message = said(found["Progressing"])
elseif found["Ready"] ~= nil and found["Ready"].status == "True" then
  hs.status = "Healthy"
  hs.message = said(found["Ready"])
elseif found["Ready"] ~= nil then
  hs.message = said(found["Ready"])
end
return hs
