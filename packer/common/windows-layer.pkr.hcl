# Layer variables of every Windows template (aws, azure, gcp), set per image in the catalog, and
# the locals that turn them into provisioning steps. Declared once, here; each Windows template
# directory links this file in as layer.pkr.hcl.

variable "scripts" {
  type        = list(string)
  default     = []
  description = "PowerShell scripts under packer/scripts/windows to run, in order."
  validation {
    condition     = length([for s in var.scripts : s if length(split("/", s)) > 1]) == 0
    error_message = "The scripts must be file names under packer/scripts/windows, without directories."
  }
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. a package-repository token)."
}

locals {
  packer_dir  = abspath("${path.root}/../..")
  scripts_dir = "${local.packer_dir}/scripts/windows"
  secret_env  = [for k, v in var.secret_env : "${k}=${v}"]
  build_env   = ["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"]
}
