# Layer variables of every Linux template (aws, azure, gcp), set per image in the catalog, and
# the locals that turn them into provisioning steps. Declared once, here; each Linux template
# directory links this file in as layer.pkr.hcl.

variable "playbook" {
  type        = string
  default     = ""
  description = "Playbook file in the image's ansible content to run on the image; empty runs no Ansible."
  validation {
    condition     = length(split("/", var.playbook)) == 1
    error_message = "The playbook must be a file name in the ansible content, without directories."
  }
}

variable "scripts" {
  type        = list(string)
  default     = []
  description = "Shell scripts in the image's scripts content to run after the playbook, in order."
  validation {
    condition     = length([for s in var.scripts : s if length(split("/", s)) > 1]) == 0
    error_message = "The scripts must be file names in the scripts content, without directories."
  }
}

variable "playbook_vars" {
  type        = map(string)
  default     = {}
  description = "Extra variables for the playbook (ansible-playbook --extra-vars), e.g. a role's package source."
}

variable "build_ca_bundle" {
  type        = string
  default     = ""
  description = "PEM bundle on the build host trusted during the build only (e.g. a host's /etc/ssl/certs/ca-certificates.crt with its local CAs for an HTTPS proxy); finalize.sh removes it, so it never ships."
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. PIP_INDEX_URL with a repository token)."
}

locals {
  # Provisioning content reaches the template through var.content_dirs (the catalog's `content`
  # field), never through where the template sits, so a copied template directory builds the same.
  # Names: scripts (shell scripts and helpers), ansible (playbooks and roles; needed only when a
  # playbook is set).
  scripts_dir = var.content_dirs["scripts"]
  # Optional (only a playbook reads it): without it a playbook fails on a path that says why.
  ansible_dir = lookup(var.content_dirs, "ansible", "/no-ansible-in-the-image-content")
  # Every input repo that is not the ansible content (e.g. a service's code) is copied to
  # /tmp/inputs/<repo> for the playbooks.
  other_inputs = { for k, v in var.input_dirs : k => v if v != local.ansible_dir }
  playbooks    = var.playbook == "" ? [] : [var.playbook]
  secret_env   = [for k, v in var.secret_env : "${k}=${v}"]
  # The build CA bundle is uploaded to ca_file and named for OpenSSL, pip and requests.
  ca_file   = "/tmp/image-assets-build-ca.pem"
  ca_upload = var.build_ca_bundle == "" ? [] : [var.build_ca_bundle]
  ca_env    = var.build_ca_bundle == "" ? [] : ["SSL_CERT_FILE=${local.ca_file}", "PIP_CERT=${local.ca_file}", "REQUESTS_CA_BUNDLE=${local.ca_file}"]
  build_env = concat(["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"], local.ca_env)
}
