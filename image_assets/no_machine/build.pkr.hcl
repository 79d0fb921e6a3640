# The sandbox's stand-in for an image that no machine can run there (Windows, the vendor AMIs moto
# ships, and every layer built on them): the image plumbing of a build (instance, AMI, snapshots,
# tags) without a communicator, so the image's own template is not run. The build runs this
# instead, says so, and its checks report "not run on the sandbox", never a pass.
# When the image's content has a `check` script (packer/scripts/content-check.sh), it runs on the
# build host: it finds a missing playbook or script before an AWS build would.
# It ships in the package (the build's own template, not one of the catalog's), so it declares the
# injected variables itself: the build hands it those and the ones below, nothing else.

variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" { type = string }
variable "manifest_path" { type = string }
variable "input_dirs" { type = map(string) }
variable "content_dirs" { type = map(string) }

variable "playbook" {
  type    = string
  default = ""
}

variable "scripts" {
  type    = list(string)
  default = []
}

variable "os_family" {
  type    = string
  default = "linux"
}

variable "template" {
  type        = string
  default     = "its template"
  description = "The image's own template directory, named in the build's output."
}

source "amazon-ebs" "no-machine" {
  region                     = var.region
  source_ami                 = var.source_image_id
  instance_type              = "t3.micro"
  ami_name                   = "${var.image_name}-${var.image_version}"
  ami_description            = "${var.image_name} ${var.image_version} (image-assets sandbox, template not run)"
  communicator               = "none"
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = true
  skip_metadata_api_check    = true
  skip_region_validation     = true

  tags            = var.tags
  run_tags        = var.tags
  run_volume_tags = var.tags
  snapshot_tags   = var.tags
}

build {
  sources = ["source.amazon-ebs.no-machine"]

  provisioner "shell-local" {
    inline = ["echo 'image-assets: ${var.image_name} built from ${var.source_image_id} without running ${var.template}: no machine runs that image on the sandbox'"]
  }

  dynamic "provisioner" {
    for_each = contains(keys(var.content_dirs), "check") ? [var.content_dirs["check"]] : []
    labels   = ["shell-local"]
    content {
      script = provisioner.value
      environment_vars = [
        "SCRIPTS_DIR=${lookup(var.content_dirs, "scripts", "")}",
        "ANSIBLE_DIR=${lookup(var.content_dirs, "ansible", "")}",
        "INPUTS=${join(" ", [for k, v in var.input_dirs : "${k}=${v}"])}",
        "OS_FAMILY=${var.os_family}",
        "PLAYBOOK=${var.playbook}",
        "SCRIPTS=${join(" ", var.scripts)}",
        "HELPERS=${var.os_family == "windows" ? "finalize.ps1" : "run-ansible.sh finalize.sh"}",
      ]
    }
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
  }
}
