// Package deploy holds corelm's Kubernetes manifests (deploy/k8s, a
// kustomize base) and the tests of every deployment file: the manifests
// decoded strictly with the Kubernetes API types, docker-compose.yml and
// .env.example, and the flags, variables, ports, paths and probes they use
// checked against the binaries the Dockerfile puts in the image. With no
// container engine or cluster at hand, the tests also run the compose
// stack and the pod's containers as local processes on loopback, with
// their own commands and environments, and see them serve.
package deploy
