// Package deploy holds no code: its tests check the container and
// Kubernetes files (../Dockerfile, k8s/) against the server they deploy.
package deploy
