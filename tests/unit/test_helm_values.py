"""deploy/helm/values.yaml uses only keys Dagster's chart defines, and says what the docker deployment says."""

import re

import yaml

from conftest import PROJECT
from helm_keys import key_paths, read_keys, unknown_paths

from image_assets.devtools import deploy_image

VALUES = PROJECT / "deploy" / "helm" / "values.yaml"
CHART_KEYS = PROJECT / "tests" / "fixtures" / "helm" / "dagster-chart-master-437f92d9-keys.txt"

# Chart keys that are free-form maps or lists (Kubernetes objects, env, raw pod/job config, extra
# instance config): the chart passes their children through, so any child is allowed.
OPEN_MAPS = {"env", "envSecrets", "envConfigMaps", "envVars", "labels", "annotations", "resources",
             "nodeSelector", "volumes", "volumeMounts", "podSpecConfig", "additionalInstanceConfig"}
# Keys the chart's values.yaml has only in comments (an example, a default left commented out) and
# its templates or schema read: configmap-instance.yaml, the schema's RunK8sConfig.
COMMENTED_IN_CHART = {"dagsterDaemon.runMonitoring.cancelTimeoutSeconds",
                      "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig"}


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def chart_keys() -> set[str]:
    return read_keys(CHART_KEYS) | COMMENTED_IN_CHART


def docker_instance() -> dict:
    return yaml.safe_load((PROJECT / "deploy" / "dagster.yaml").read_text())


def test_every_key_is_the_charts():
    assert unknown_paths(values(), chart_keys(), OPEN_MAPS) == []


def test_an_unknown_key_is_reported_with_its_path():
    keys = chart_keys()
    assert unknown_paths({"runLaucher": {"type": "K8sRunLauncher"}}, keys, OPEN_MAPS) == ["runLaucher"]
    typo = {"runLauncher": {"config": {"k8sRunLauncher": {"envSecret": [{"name": "aws"}]}}}}
    assert unknown_paths(typo, keys, OPEN_MAPS) == ["runLauncher.config.k8sRunLauncher.envSecret"]
    in_list = {"dagster-user-deployments": {"deployments": [{"name": "a", "imag": {"tag": "x"}}]}}
    assert unknown_paths(in_list, keys, OPEN_MAPS) == ["dagster-user-deployments.deployments[].imag"]
    # Under an open map anything goes; the same name outside one is still checked.
    ok = {"runLauncher": {"config": {"k8sRunLauncher": {"runK8sConfig": {"podSpecConfig": {"anything": 1}}}}}}
    assert unknown_paths(ok, keys, OPEN_MAPS) == []
    raw = {"runLauncher": {"config": {"k8sRunLauncher": {"runK8sConfig": {"podSpecConfg": {}}}}}}
    assert unknown_paths(raw, keys, OPEN_MAPS) == ["runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfg"]
    assert unknown_paths({"labels": {"a": "b"}}, keys, OPEN_MAPS) == ["labels"]


def test_key_paths_of_a_small_document():
    doc = yaml.safe_load("""
a:
  b: 1
  c: {}
  d:
    - name: x
      e: {f: 1}
    - g: 2
  h: [1, 2]
""")
    assert key_paths(doc) == ["a", "a.b", "a.c", "a.d", "a.d[].e", "a.d[].e.f", "a.d[].g", "a.d[].name", "a.h"]


def test_fixture_names_its_chart_and_source():
    header = CHART_KEYS.read_text().splitlines()[0]
    assert header.startswith("# dagster/dagster Helm chart") and "helm/dagster/values.yaml" in header
    assert "437f92d953812a3efdf5a464ba196eb3fcd9a777" in header
    keys = read_keys(CHART_KEYS)
    assert {"dagster-user-deployments.deployments[].image.repository", "runLauncher.type",
            "concurrency.pools.defaultLimit"} <= keys
    assert not COMMENTED_IN_CHART & keys  # once the chart defines it, drop it from the list


def test_user_deployment_is_the_deploy_image():
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    image = deployment["image"]
    # A registry prefix may come before the name; the tag is :latest or an inputs-key tag.
    assert image["repository"] == deploy_image.IMAGE or image["repository"].endswith("/" + deploy_image.IMAGE)
    assert re.fullmatch(r"latest|[0-9a-f]{16}", str(image["tag"]))
    # The module and directory of the image's own CMD, the port of deploy/workspace.yaml.
    dockerfile = (PROJECT / "deploy" / "Dockerfile").read_text()
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == cmd[cmd.index("-m") + 1]
    assert args[args.index("-d") + 1] == workdir
    workspace = yaml.safe_load((PROJECT / "deploy" / "workspace.yaml").read_text())
    assert deployment["port"] == workspace["load_from"][0]["grpc_server"]["port"]


def test_grace_period_and_limits_match_the_docker_deployment():
    docker = docker_instance()
    k8s = values()
    launcher = k8s["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    grace = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["terminationGracePeriodSeconds"]
    assert grace >= docker["run_launcher"]["config"]["container_kwargs"]["stop_timeout"]
    monitoring = k8s["dagsterDaemon"]["runMonitoring"]
    assert monitoring["cancelTimeoutSeconds"] >= docker["run_monitoring"]["cancel_timeout_seconds"]
    assert monitoring["maxResumeRunAttempts"] == docker["run_monitoring"]["max_resume_run_attempts"]
    assert k8s["dagsterDaemon"]["runCoordinator"]["type"] == docker["run_coordinator"]["class"]
    assert k8s["concurrency"]["enabled"] is True
    assert k8s["concurrency"]["pools"]["defaultLimit"] == docker["concurrency"]["pools"]["default_limit"]
    assert k8s["concurrency"]["runs"]["maxConcurrentRuns"] == docker["concurrency"]["runs"]["max_concurrent_runs"]
    assert k8s["postgresql"]["postgresqlScheme"] == docker["storage"]["postgres"]["postgres_db"]["scheme"]


def test_cloud_credentials_come_from_a_secret():
    k8s = values()
    secrets = k8s["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert secrets and all(set(s) == {"name"} for s in secrets)
    # No credential value in the file itself.
    assert not re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)\s*[:=]", VALUES.read_text())
    assert k8s["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in k8s["postgresql"]
