-- The rollback of an LLMDeployment (kubectl llm rollback's): enabled while the revision the last rollout replaced
-- is still up (status.previousRevision, its pods kept for scaleDownDelaySeconds) and no rollout is in flight (abort
-- that one instead: during a bake, abort rolls back to the same pods).
local actions = {}
local status = obj.status or {}
local warm = false
if status.previousRevision ~= nil and status.revisions ~= nil then
  for _, revision in ipairs(status.revisions) do
    if revision.revision == status.previousRevision and revision.role == "previous" then
      warm = true
    end
  end
end
local inflight = status.rollout ~= nil or status.canaryRevision ~= nil
actions["rollback"] = {["disabled"] = (not warm) or inflight, ["iconClass"] = "fa fa-fw fa-undo"}
return actions
