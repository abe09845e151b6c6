"""Static checks of the deployment files, and the pieces that only deployments use."""
