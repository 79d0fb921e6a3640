# image-assets drop-in: copy this file (a copy, not a link) next to your own *.pkr.hcl files to
# build them with image-assets. It declares what the build injects and builds on the sandbox
# target (a local EC2 emulator) with a source and a build block of its own, so your template
# needs only its own `amazon-ebs.aws` source and build. Remove any declaration of these
# variables from your files (a variable declared twice fails). Check the result with
#   python -m image_assets check-template DIR [--image NAME]

# --- What the build injects (a JSON var-file written per build) ---

variable "image_name" {
  type        = string
  description = "Catalog name of the image being built."
}

variable "image_version" {
  type        = string
  description = "Version of this build; name the image <image_name>-<image_version>."
}

variable "source_image_id" {
  type        = string
  description = "The parent image (an AMI id): build from it."
}

variable "region" {
  type        = string
  description = "The one region of this build; copying the image elsewhere is not the template's job."
}

variable "tags" {
  type        = map(string)
  description = "Put these on the image and on every instance, volume and snapshot (tags, run_tags, run_volume_tags, snapshot_tags)."
}

variable "sandbox_endpoint" {
  type        = string
  default     = ""
  description = "EC2 endpoint of the sandbox emulator (amazon-ebs.sandbox only)."
}

variable "manifest_path" {
  type        = string
  default     = "manifest.json"
  description = "A fresh manifest file per build, for a manifest post-processor."
}

variable "input_dirs" {
  type        = map(string)
  default     = {}
  description = "The image's input git repos, checked out at their tags: repo name -> absolute path."
}

variable "content_dirs" {
  type        = map(string)
  default     = {}
  description = "The image's provisioning content from the catalog's `content`: name -> absolute path."
}

# --- The sandbox target: same image plumbing as AWS, no instance to connect to ---

source "amazon-ebs" "sandbox" {
  region                     = var.region
  source_ami                 = var.source_image_id
  instance_type              = "t3.micro"
  ami_name                   = "${var.image_name}-${var.image_version}"
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

# Its own build: provisioners of your build never run on the sandbox (with communicator
# "none" a remote provisioner would hang).
build {
  sources = ["source.amazon-ebs.sandbox"]

  provisioner "shell-local" {
    inline = ["echo 'image-assets sandbox build of ${var.image_name} ${var.image_version} from ${var.source_image_id}'"]
  }
}
