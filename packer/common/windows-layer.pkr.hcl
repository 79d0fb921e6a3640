# Layer variables of every Windows template (aws, azure, gcp), set per image in the catalog, and
# the locals that turn them into provisioning steps. Declared once, here; each Windows template
# directory links this file in as layer.pkr.hcl.

variable "scripts" {
  type        = list(string)
  default     = []
  description = "PowerShell scripts in the image's scripts content to run, in order."
  validation {
    condition     = length([for s in var.scripts : s if length(split("/", s)) > 1]) == 0
    error_message = "The scripts must be file names in the scripts content, without directories."
  }
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. a package-repository token)."
}

locals {
  # Provisioning content reaches the template through var.content_dirs (the catalog's `content`
  # field), never through where the template sits. Names: scripts; the aws template's sandbox source
  # also reads check (the content check).
  scripts_dir = var.content_dirs["scripts"]
  secret_env  = [for k, v in var.secret_env : "${k}=${v}"]
  build_env   = ["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"]
}
