"""The Ray names a cluster's parts find each other by: one Triserve cluster per Ray namespace."""

NAMESPACE = "triserve"  # of the control plane (and of everything the launcher starts)
CONTROL_PLANE_NAME = "triserve-control-plane"  # the control plane's named actor
