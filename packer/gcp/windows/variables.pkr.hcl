# Variables of the GCP Windows template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Windows template shares (scripts, secret_env) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

variable "instance_type" {
  type        = string
  default     = "e2-standard-4"
  description = "Machine type."
}

variable "winrm_username" {
  type        = string
  default     = "packer_user"
  description = "Packer creates this user's password through the GCE Windows password reset."
}

variable "project_id" {
  type        = string
  default     = env("GOOGLE_PROJECT")
  description = "Project that runs the build VM and receives the images."
}

variable "zone" {
  type        = string
  default     = ""
  description = "Zone of the build VM; empty means <region>-a."
}

locals {
  zone = var.zone != "" ? var.zone : "${var.region}-a"

  # GCE image names: lowercase letters, digits and '-', at most 63 characters.
  image_full_name = substr(lower(replace(replace("${var.image_name}-${var.image_version}", ".", "-"), "_", "-")), 0, 63)
  # source_image_id: projects/<p>/global/images/<name> | <p>/<name> | <name> (in project_id).
  image_path    = split("/", var.source_image_id)
  image_project = length(local.image_path) == 1 ? var.project_id : (length(local.image_path) == 2 ? local.image_path[0] : element(local.image_path, 1))
  image_source  = element(local.image_path, length(local.image_path) - 1)
  # Labels allow lowercase letters, digits, '_' and '-' (values at most 63 characters); the
  # tags' exact values stay in the image description.
  labels = {
    for k, v in var.tags : lower(k) => substr(lower(
      replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(
      v, ".", "-"), ":", "-"), "/", "-"), "@", "-"), ",", "-"), " ", "-"), ">", "-"), "=", "-"), "+", "-"), "~", "-")
    ), 0, 63)
  }
}
