-- Roll back to the previous revision, whose pods are still up: an LLMRollout with strategy none to its model (its
-- MLflow version, or its URI) and the deployment's runtime, as `kubectl llm rollback` makes it when that revision's
-- runtime is the present one. Created, not patched: the LLMDeployment's spec in Git is left alone (Argo CD shows
-- Degraded until Git names the revision that serves). Not labelled for Argo CD's tracking, so no prune removes it.
local os = require("os")
local status = obj.status
local previous = status.previousRevision
local model = nil
for _, revision in ipairs(status.revisions) do
  if revision.revision == previous then
    if revision.modelVersion ~= nil then
      model = {version = revision.modelVersion}
    else
      model = {uri = revision.modelUri}
    end
  end
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
