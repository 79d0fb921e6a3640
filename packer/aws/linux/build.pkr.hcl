build {
  sources = ["source.amazon-ebs.aws", "source.amazon-ebs.sandbox", "source.docker.local"]

  # Sandbox only: a content check, not provisioning. It verifies that this layer's playbook and
  # scripts exist and are well-formed, and prints what the aws source would run.
  provisioner "shell-local" {
    only   = ["amazon-ebs.sandbox"]
    script = var.content_dirs["check"]
    environment_vars = [
      "SCRIPTS_DIR=${local.scripts_dir}",
      "ANSIBLE_DIR=${local.ansible_dir}",
      "INPUTS=${join(" ", [for k, v in var.input_dirs : "${k}=${v}"])}",
      "OS_FAMILY=linux",
      "PLAYBOOK=${var.playbook}",
      "SCRIPTS=${join(" ", var.scripts)}",
      "HELPERS=run-ansible.sh finalize.sh",
    ]
  }

  # Directory uploads need their destination to exist.
  provisioner "shell" {
    only   = ["amazon-ebs.aws", "docker.local"]
    inline = concat(["mkdir -p /tmp/ansible"], [for k, v in local.other_inputs : "mkdir -p /tmp/inputs/${k}"])
  }

  # The build's CA bundle (var.build_ca_bundle), for HTTPS through a proxy; finalize.sh removes it.
  dynamic "provisioner" {
    for_each = local.ca_upload
    labels   = ["file"]
    content {
      only        = ["amazon-ebs.aws", "docker.local"]
      source      = provisioner.value
      destination = local.ca_file
    }
  }

  dynamic "provisioner" {
    for_each = local.playbooks
    labels   = ["file"]
    content {
      only        = ["amazon-ebs.aws", "docker.local"]
      source      = "${local.ansible_dir}/"
      destination = "/tmp/ansible"
    }
  }

  dynamic "provisioner" {
    for_each = local.other_inputs
    labels   = ["file"]
    content {
      only        = ["amazon-ebs.aws", "docker.local"]
      source      = "${provisioner.value}/"
      destination = "/tmp/inputs/${provisioner.key}"
    }
  }

  dynamic "provisioner" {
    for_each = local.playbooks
    labels   = ["shell"]
    content {
      only             = ["amazon-ebs.aws", "docker.local"]
      script           = "${local.scripts_dir}/run-ansible.sh"
      environment_vars = concat(local.secret_env, local.ca_env, ["PLAYBOOK=${provisioner.value}", "ANSIBLE_DIR=/tmp/ansible", "PLAYBOOK_VARS=${jsonencode(var.playbook_vars)}"])
      use_env_var_file = true
      execute_command  = local.execute_command
    }
  }

  # One provisioner per script, in order (1.6.6 deletes the env var file after the first
  # script of a `scripts` list).
  dynamic "provisioner" {
    for_each = var.scripts
    labels   = ["shell"]
    content {
      only             = ["amazon-ebs.aws", "docker.local"]
      script           = "${local.scripts_dir}/${provisioner.value}"
      environment_vars = concat(local.secret_env, local.build_env)
      use_env_var_file = true
      execute_command  = local.execute_command
    }
  }

  # Last step of every layer: record the layer, remove build-only tools and per-instance state.
  provisioner "shell" {
    only             = ["amazon-ebs.aws", "docker.local"]
    script           = "${local.scripts_dir}/finalize.sh"
    environment_vars = local.build_env
    use_env_var_file = true
    execute_command  = local.execute_command
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      image_name      = var.image_name
      image_version   = var.image_version
      source_image_id = var.source_image_id
    }
  }
}
