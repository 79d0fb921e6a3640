# Layer variables of every Linux template (aws, azure, gcp), set per image in the catalog, and
# the locals that turn them into provisioning steps. Declared once, here; each Linux template
# directory links this file in as layer.pkr.hcl.

variable "playbook" {
  type        = string
  default     = ""
  description = "Playbook file under packer/ansible to run on the image; empty runs no Ansible."
  validation {
    condition     = length(split("/", var.playbook)) == 1
    error_message = "The playbook must be a file name under packer/ansible, without directories."
  }
}

variable "scripts" {
  type        = list(string)
  default     = []
  description = "Shell scripts under packer/scripts/linux to run after the playbook, in order."
  validation {
    condition     = length([for s in var.scripts : s if length(split("/", s)) > 1]) == 0
    error_message = "The scripts must be file names under packer/scripts/linux, without directories."
  }
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. PIP_INDEX_URL with a repository token)."
}

locals {
  packer_dir  = abspath("${path.root}/../..")
  scripts_dir = "${local.packer_dir}/scripts/linux"
  # Roles and playbooks come from the tagged ansible-roles checkout when the image names that
  # repo, else from this template's own packer/ansible.
  ansible_dir = lookup(var.input_dirs, "ansible-roles", "${local.packer_dir}/ansible")
  # Every other input repo (e.g. a service's code) is copied to /tmp/inputs/<repo> for the playbooks.
  other_inputs = { for k, v in var.input_dirs : k => v if k != "ansible-roles" }
  playbooks    = var.playbook == "" ? [] : [var.playbook]
  secret_env   = [for k, v in var.secret_env : "${k}=${v}"]
  build_env    = ["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"]
}
