build {
  sources = ["source.amazon-ebs.aws", "source.docker.local"]

  # Directory uploads need their destination to exist.
  provisioner "shell" {
    inline = concat(["mkdir -p /tmp/ansible"], [for k, v in local.other_inputs : "mkdir -p /tmp/inputs/${k}"])
  }

  # The build's CA bundle (var.build_ca_bundle), for HTTPS through a proxy; finalize.sh removes it.
  dynamic "provisioner" {
    for_each = local.ca_upload
    labels   = ["file"]
    content {
      source      = provisioner.value
      destination = local.ca_file
    }
  }

  dynamic "provisioner" {
    for_each = local.playbooks
    labels   = ["file"]
    content {
      source      = "${local.ansible_dir}/"
      destination = "/tmp/ansible"
    }
  }

  dynamic "provisioner" {
    for_each = local.other_inputs
    labels   = ["file"]
    content {
      source      = "${provisioner.value}/"
      destination = "/tmp/inputs/${provisioner.key}"
    }
  }

  dynamic "provisioner" {
    for_each = local.playbooks
    labels   = ["shell"]
    content {
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
      script           = "${local.scripts_dir}/${provisioner.value}"
      environment_vars = concat(local.secret_env, local.build_env)
      use_env_var_file = true
      execute_command  = local.execute_command
    }
  }

  # Last step of every layer: record the layer, remove build-only tools and per-instance state.
  provisioner "shell" {
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
