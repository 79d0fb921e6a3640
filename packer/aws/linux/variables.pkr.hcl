# Variables of the AWS Linux template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Linux template shares (scripts, secret_env, playbook) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "The login of the parent image: admin on Debian's AMIs, ec2-user on Amazon Linux."
}

locals {
  ami_name = "${var.image_name}-${var.image_version}"
  # Shell scripts run as root: directly in a container, through sudo on a VM. Environment comes
  # from packer's env var file (use_env_var_file = true on every shell provisioner), so secrets
  # never appear on a command line.
  execute_command = "chmod +x {{ .Path }}; . {{ .EnvVarFile }} && sh -c 'if [ \"$(id -u)\" = 0 ]; then exec \"$0\"; else exec sudo -E \"$0\"; fi' {{ .Path }}"
}
