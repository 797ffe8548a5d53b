"""The Kubernetes runtime: what an account's desired state looks like on a cluster (manifests, pure), and the
checks every rendered object passes (the API's schemas, Pod Security)."""
