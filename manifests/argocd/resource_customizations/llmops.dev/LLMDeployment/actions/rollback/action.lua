-- Roll back to the previous revision, whose pods are still up: an LLMRollout with strategy none to its model (its
-- MLflow version, or its URI) and the deployment's runtime, as `kubectl llm rollback` makes it when that revision's
-- runtime is the present one. Created, not patched: the LLMDeployment's spec in Git is left alone (Argo CD shows
-- Degraded until Git names the revision that serves). Not labelled for Argo CD's tracking, so no prune removes it.
-- Argo CD runs an action whatever discovery said (the API and the CLI do not check "disabled"): the script refuses
-- what discovery disables, as `kubectl llm rollback` does.
local os = require("os")
local status = obj.status or {}
local previous = status.previousRevision
if status.rollout ~= nil or status.canaryRevision ~= nil then
  error("a rollout is in flight: abort it instead (during a bake that rolls back to the same pods)")
end
local model = nil
for _, revision in ipairs(status.revisions or {}) do
  if previous ~= nil and revision.revision == previous and revision.role == "previous" then
    if revision.modelVersion ~= nil then
      model = {version = revision.modelVersion}
    else
      model = {uri = revision.modelUri}
    end
  end
end
if model == nil then
  error("no previous revision with pods still up: use kubectl llm rollback --to-revision")
end
local rollout = {
  apiVersion = "llmops.dev/v1alpha1",
  kind = "LLMRollout",
  metadata = {
    name = obj.metadata.name .. "-rollback-" .. previous .. "-" .. os.date("!%y%m%d%H%M%S"),
    namespace = obj.metadata.namespace,
    labels = {["llmops.dev/deployment"] = obj.metadata.name, ["llmops.dev/rollback-to"] = previous},
  },
  spec = {deploymentName = obj.metadata.name, strategy = "none", target = {model = model}},
}
return {{operation = "create", resource = rollout}}
