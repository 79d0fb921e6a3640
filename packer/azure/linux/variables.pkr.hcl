# Variables of the Azure Linux template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Linux template shares (scripts, secret_env, playbook) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

variable "instance_type" {
  type        = string
  default     = "Standard_D2s_v3"
  description = "VM size."
}

variable "ssh_username" {
  type    = string
  default = "packer"
}

variable "subscription_id" {
  type    = string
  default = env("ARM_SUBSCRIPTION_ID")
}

variable "resource_group" {
  type        = string
  default     = "images"
  description = "Resource group that receives the managed images."
}

locals {
  # Managed image names allow letters, digits, '.', '-' and '_'.
  image_full_name = "${var.image_name}-${var.image_version}"
  # Scripts run as root; environment comes from packer's env var file (use_env_var_file = true
  # on every shell provisioner), so secrets never appear on a command line.
  execute_command = "chmod +x {{ .Path }}; . {{ .EnvVarFile }} && sudo -E {{ .Path }}"

  # source_image_id: "Publisher:Offer:Sku:Version" (vendor) or a managed image id (parent layer).
  urn         = split(":", var.source_image_id)
  marketplace = length(local.urn) == 4
  image_path  = split("/", var.source_image_id)
}
