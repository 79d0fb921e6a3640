# Variables of the GCP Linux template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Linux template shares (scripts, secret_env, playbook) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

variable "instance_type" {
  type        = string
  default     = "e2-standard-2"
  description = "Machine type."
}

variable "ssh_username" {
  type    = string
  default = "packer"
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

  # Scripts run as root; environment comes from packer's env var file (use_env_var_file = true
  # on every shell provisioner), so secrets never appear on a command line.
  execute_command = "chmod +x {{ .Path }}; . {{ .EnvVarFile }} && sudo -E {{ .Path }}"

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
