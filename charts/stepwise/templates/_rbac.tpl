{{/*
The controller's permissions, derived from every API call in controller/ (the same rules
as deploy/base/rbac.yaml; tests/integration/test_packaging.py checks that the two agree
and that removing any one rule breaks a rollout). Nothing reads a Rollout, ReplicaSet,
Service, Deployment or template by name: the informers list and watch them into caches
(controller/runtime/manager.py), so those get only list and watch. Pods are created by
the cluster's ReplicaSet and Job controllers, never by Stepwise.
*/}}

{{/* Rules for objects in a watched namespace: a ClusterRole's, or each namespace's Role. */}}
{{- define "stepwise.rules.namespaced" -}}
# Rollouts: the informer lists and watches them (runtime/manager.py); the cleanup
# finalizer is added and removed with a JSON patch (adapters/kube.py set_finalizer). The
# job analysis provider reads one Rollout's persisted status with a list narrowed by a
# metadata.name field selector (adapters/jobs.py).
- apiGroups: ["stepwise.dev"]
  resources: ["rollouts"]
  verbs: ["list", "watch", "patch"]
# The status subresource: every status write is one PATCH of rollouts/status
# (adapters/kube.py patch_status).
- apiGroups: ["stepwise.dev"]
  resources: ["rollouts/status"]
  verbs: ["patch"]
# ReplicaSets, TrafficSplits, canary Ingresses and analysis Jobs carry a
# blockOwnerDeletion owner reference to their Rollout; where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened
# clusters), setting one needs update on rollouts/finalizers.
- apiGroups: ["stepwise.dev"]
  resources: ["rollouts/finalizers"]
  verbs: ["update"]
# AnalysisTemplates: the informer lists and watches them (runtime/manager.py).
- apiGroups: ["stepwise.dev"]
  resources: ["analysistemplates"]
  verbs: ["list", "watch"]
# ReplicaSets: watched (labelled stepwise.dev/rollout); one per revision is created and
# scaled, orphans adopted with a patch, and old ones beyond revisionHistoryLimit deleted
# (adapters/kube.py).
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Deployments: watched, for the Rollouts whose spec.workloadRef takes the pod template
# from one (runtime/manager.py); scaleDown onsuccess/progressively sets its replicas and
# annotations with a patch (adapters/kube.py scale_deployment). Never created or deleted.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "patch"]
# Services: watched; the stable and canary Services' selectors are pinned to a revision
# with a patch (adapters/kube.py pin_service); routers read the Services from that
# watch too (runtime/objects.py).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "patch"]
# EndpointSlices: listed (one request, by the Service's label) while a canary waits for
# its first share of traffic, which is given only once its Ready pods are endpoints
# (runtime/reconciler.py _canary_endpoints).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
# Pods: a blue-green Rollout's activeMetadata/previewMetadata are added to the pods of
# each role (listed by revision label, then patched; adapters/kube.py set_role_metadata);
# a failed analysis Job's pods are listed by its job-name label, to say why it failed
# (adapters/jobs.py).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Events on the Rollout, router problems included (adapters/kube.py emit_event).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Jobs of the job analysis provider (adapters/jobs.py): one per measurement is created,
# owned by the Rollout, and read by GET until it finishes (a restarted controller's
# create finds it and reads it the same way); a Rollout's Jobs are listed by label and
# deleted once their verdicts are recorded, or at once when their run was aborted or
# replaced. No watch: a running Job is polled.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "delete"]
{{- if .Values.rbac.readSecrets }}
# Secrets: analysis arguments (valueFrom.secretKeyRef) and Prometheus credentials and CA
# are read from Secrets in the Rollout's namespace (runtime/measure.py).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.routers.gatewayAPI }}
# Router objects are observed from a watch (list, watch: runtime/objects.py; without
# them each observation is a GET) and read by GET before and after every write.
# Gateway API router: read the HTTPRoute, write weights and header rules with a JSON
# patch guarded by resourceVersion (adapters/traffic/gatewayapi.py).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.rbac.routers.smi }}
# SMI router: the TrafficSplit is created by Stepwise (owned by the Rollout), then read
# and patched (adapters/traffic/smi.py).
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end }}
{{- if .Values.rbac.routers.istio }}
# Istio router: read the VirtualService, patch its destination weights and header routes
# (adapters/traffic/istio.py).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
# Istio router in subset mode: read the DestinationRule, patch the revision label of its
# stable and canary subsets (adapters/traffic/istio.py).
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.rbac.routers.nginx }}
# NGINX router: read the stable Ingress; the canary Ingress is written by server-side
# apply, which is a patch that creates the object the first time (so create too);
# garbage collection deletes it with the Rollout (adapters/traffic/nginx.py).
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end }}
{{- end -}}

{{/* Rules for cluster-scoped objects: always in a ClusterRole. */}}
{{- define "stepwise.rules.cluster" -}}
# ClusterAnalysisTemplates: cluster-scoped, so watched cluster-wide even in namespaced
# mode (runtime/manager.py).
- apiGroups: ["stepwise.dev"]
  resources: ["clusteranalysistemplates"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* The Lease, in the lease namespace only (runtime/leader.py). */}}
{{- define "stepwise.rules.lease" -}}
# Creating the Lease the first time (a create names no object, so resourceNames cannot
# narrow it).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Reading, renewing and releasing that one Lease (a replace: update), and watching it
# (a follower sees each renewal at once; list and watch carry a metadata.name field
# selector, which is what lets resourceNames narrow them).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "list", "watch", "update"]
# Notifications (runtime/notifier.py) live in the same namespace (--notifications-namespace
# defaults to the lease's): the targets ConfigMap and the delivery ledger are read by name;
# the ledger is created on the first delivery and replaced after each one; the targets'
# Secrets are read; a wrong ConfigMap gets a Warning event.
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["stepwise-notifications", "stepwise-notifications-ledger"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["stepwise-notifications-ledger"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
