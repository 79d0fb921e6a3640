# GCE: a temporary VM reached over SSH (packer's temporary key in instance metadata); the result
# is an image in project_id, family = image_name, that the next layer uses as its source.
source "googlecompute" "gcp" {
  project_id              = var.project_id
  zone                    = local.zone
  machine_type            = var.instance_type
  source_image            = local.image_source
  source_image_project_id = [local.image_project]
  image_name              = local.image_full_name
  image_family            = substr(lower(replace(var.image_name, "_", "-")), 0, 63)
  image_description       = substr(jsonencode(var.tags), 0, 2048)
  image_labels            = local.labels
  labels                  = local.labels
  communicator            = "ssh"
  ssh_username            = var.ssh_username
}
