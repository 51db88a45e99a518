-- The manual controls of an LLMRollout, each a change of its spec (visible in Git), enabled as its phase allows.
local actions = {}
local phase = "Pending"
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local finished = phase == "Succeeded" or phase == "Aborted" or phase == "Failed"
local paused = (obj.spec.paused == true) or phase == "Paused"
actions["promote"] = {["disabled"] = finished}
actions["abort"] = {["disabled"] = finished or obj.spec.abort == true}
actions["pause"] = {["disabled"] = finished or obj.spec.paused == true}
actions["resume"] = {["disabled"] = finished or not paused}
actions["retry"] = {["disabled"] = not (phase == "Aborted" or phase == "Failed")}
return actions
