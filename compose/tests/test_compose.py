"""The compose file against the seed's deployment table (docs/operations.md): services,
profiles, networks, ports, the ring volume's mounts, healthchecks and the config files
the services mount.

The file is read as docker-compose itself resolves it (`docker-compose config`, with
the documented defaults for every ${VARIABLE}), so a typo that compose would reject or
resolve differently fails here too.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[1]
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
PROFILES = ["dev", "sim", "train", "obs", "cuda", "rocm", "mlx"]

# service: (profiles, networks or "host", published host ports, container ports)
TABLE = {
    "webserver": ({"dev", "sim"}, {"edge", "backplane"}, {80, 443}, {80, 443}),
    "transport-server": ({"dev", "sim"}, {"edge", "backplane"}, {8080}, {8080}),
    "node": ({"dev", "sim"}, {"backplane"}, set(), {3000}),
    "nats": ({"dev", "sim", "train"}, {"backplane"}, set(), {4222, 8222}),
    "genesis-sim": ({"sim"}, {"backplane"}, set(), set()),
    "training-runner": ({"train"}, {"backplane"}, set(), set()),
    "prometheus": ({"obs"}, {"backplane"}, set(), {9090}),
    "grafana": ({"obs"}, {"backplane"}, set(), {3001}),
    "ros-bridge": ({"dev", "sim"}, "host", set(), {9090}),
    "app-cuda": ({"cuda"}, {"default"}, set(), set()),
    "app-rocm": ({"rocm"}, {"default"}, set(), set()),
    "app-mlx": ({"mlx"}, {"default"}, set(), set()),
}


def compose(*args):
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (scripts/setup installs Debian's docker-compose)"
    r = subprocess.run([exe, "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{r.stderr}"
    return r.stdout


def parse_port(spec):
    """docker-compose v1 prints ports short: "[host_ip:]published:target[/proto]" or "target[/proto]"."""
    if isinstance(spec, dict):
        return spec.get("host_ip"), spec.get("published"), int(spec["target"])
    parts = str(spec).split("/")[0].split(":")
    if len(parts) == 1:
        return None, None, int(parts[0])
    host_ip = parts[0] if len(parts) == 3 else None
    return host_ip, int(parts[-2]), int(parts[-1])


def parse_volume(spec):
    """Short volume syntax "source:target[:ro|rw]" -> (source, target, read_only)."""
    if isinstance(spec, dict):
        return spec.get("source"), spec["target"], bool(spec.get("read_only", False))
    parts = spec.split(":")
    return parts[0], parts[1], len(parts) > 2 and parts[2] == "ro"


@pytest.fixture(scope="module")
def resolved():
    """The compose file as docker-compose resolves it with every variable at its default."""
    return yaml.safe_load(compose("config"))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates(profile):
    compose("--profile", profile, "config", "-q")


def test_services_and_profiles(resolved):
    services = resolved["services"]
    assert set(services) == set(TABLE), "service list differs from the seed's 12"
    for name, (profiles, *_rest) in TABLE.items():
        assert set(services[name].get("profiles", [])) == profiles, name
    used = set().union(*(set(s.get("profiles", [])) for s in services.values()))
    assert used == set(PROFILES)
    # Each profile starts a runnable set: every dependency is in the same profile.
    for profile in PROFILES:
        active = {n for n, s in services.items() if profile in s.get("profiles", [])}
        for name in active:
            missing = set(services[name].get("depends_on", {})) - active
            assert not missing, f"profile {profile}: {name} depends on {missing}, not in the profile"


def test_networks(resolved):
    nets = resolved["networks"]
    assert nets["edge"].get("driver") == "bridge" and not nets["edge"].get("internal", False)
    assert nets["backplane"].get("driver") == "bridge" and nets["backplane"]["internal"] is True
    for name, (_p, networks, *_rest) in TABLE.items():
        svc = resolved["services"][name]
        if networks == "host":
            assert svc.get("network_mode") == "host", name
            assert "networks" not in svc and "ports" not in svc, f"{name}: host network takes no networks/ports"
        elif networks == {"default"}:
            # CI targets: no stack networking, they run one command and exit.
            assert "networks" not in svc and "network_mode" not in svc, name
        else:
            assert set(svc.get("networks", {})) == networks, name


def test_ports(resolved):
    for name, (_p, _n, published, container) in TABLE.items():
        svc = resolved["services"][name]
        ports = [parse_port(p) for p in svc.get("ports", [])]
        assert {p[1] for p in ports} == published, f"{name} publishes {ports}"
        got_container = {p[2] for p in ports} | {int(e) for e in svc.get("expose", [])}
        if name == "ros-bridge":
            got_container = {int(svc["environment"]["ROSBRIDGE_PORT"])}
        assert got_container == container, f"{name}: container ports {got_container}"
    # The transport server is reached through Caddy; its own port is published on loopback only.
    (tp,) = resolved["services"]["transport-server"]["ports"]
    assert parse_port(tp)[0] == "127.0.0.1"
    # Nothing on the internal backplane alone publishes a port (it could not be reached).
    for name, svc in resolved["services"].items():
        if set(svc.get("networks", {})) == {"backplane"}:
            assert not svc.get("ports"), f"{name} is backplane-only but publishes ports"


def test_ring_volume_is_tmpfs_rw_in_sim_ro_in_transport(resolved):
    vol = resolved["volumes"]["shm"]
    assert vol["driver_opts"]["type"] == "tmpfs"
    opts = dict(o.split("=", 1) for o in vol["driver_opts"]["o"].split(","))
    assert opts["size"] == "512m" and opts["mode"] == "0770"
    mounts = {}
    for name, svc in resolved["services"].items():
        for source, target, read_only in map(parse_volume, svc.get("volumes", [])):
            if source == "shm":
                mounts[name] = (target, read_only)
    assert mounts == {
        "genesis-sim": ("/dev/shm/sdr_os_ipc", False),
        "transport-server": ("/dev/shm/sdr_os_ipc", True),
    }
    env = resolved["services"]["transport-server"]["environment"]
    assert env["SDR_SHM_PATH"].startswith("/dev/shm/sdr_os_ipc/")
    sim_cmd = resolved["services"]["genesis-sim"]["command"]
    assert sim_cmd[sim_cmd.index("--path") + 1] == env["SDR_SHM_PATH"], "writer and reader use different rings"
    # Same uid in writer and reader, and it owns the tmpfs (the ring file is 0600).
    uid = opts["uid"]
    assert opts["gid"] == uid
    for name in mounts:
        assert resolved["services"][name]["user"] == f"{uid}:{uid}", name


def test_healthchecks(resolved):
    services = resolved["services"]
    for name in ("webserver", "transport-server"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/health" in test, f"{name} healthcheck does not use /health: {test}"
    for name in ("webserver", "transport-server", "node", "nats", "genesis-sim", "prometheus", "grafana",
                 "ros-bridge"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["webserver"]["depends_on"]["transport-server"]["condition"] == "service_healthy"
    assert services["transport-server"]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_images_and_builds(resolved):
    services = resolved["services"]
    targets = {n: s["build"].get("target") for n, s in services.items() if "build" in s}
    assert targets == {"transport-server": "transport-server", "genesis-sim": "cuda", "app-cuda": "cuda",
                       "app-rocm": "rocm", "app-mlx": "mlx", "ros-bridge": None}
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    assert {t for t in targets.values() if t} <= stages
    assert (COMPOSE_DIR / "ros-jazzy" / "Dockerfile").is_file()
    # genesis-sim runs the Genesis example, which the image copies in.
    assert "examples/genesis_writer.py" in " ".join(services["genesis-sim"]["command"])
    assert "COPY examples/genesis-writer/genesis_writer.py /opt/shmring/examples/" in dockerfile
    assert services["app-cuda"]["command"] == ["validate-nvenc"]
    # Code that lives outside this project comes from documented variables.
    raw = COMPOSE_FILE.read_text()
    for var in ("SHMRING_NODE_IMAGE", "SHMRING_NODE_COMMAND", "SHMRING_TRAINER_IMAGE", "SHMRING_TRAINER_COMMAND"):
        assert f"${{{var}:-" in raw, f"{var} has no default"
        assert re.search(rf"^#.*{var}=", raw, re.M), f"{var} is not documented in the header"


def test_mounted_config_files_exist(resolved):
    checked = set()
    for name, svc in resolved["services"].items():
        for source, _target, _ro in map(parse_volume, svc.get("volumes", [])):
            if source.startswith("/") and name != "node":  # node's app is the user's (SHMRING_NODE_APP)
                assert Path(source).exists(), f"{name} mounts missing {source}"
                checked.add(Path(source).name)
    assert checked == {"Caddyfile", "nats.conf", "prometheus.yml", "provisioning", "dashboards"}


def test_nats_has_jetstream_and_prometheus_scrapes_transport():
    assert re.search(r"^jetstream\s*\{", (COMPOSE_DIR / "nats.conf").read_text(), re.M)
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for sc in jobs["transport-server"]["static_configs"] for t in sc["targets"]]
    assert targets == ["transport-server:8080"] and jobs["transport-server"]["metrics_path"] == "/metrics"


def test_grafana_dashboard_uses_the_provisioned_datasource():
    ds = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dash = json.loads((COMPOSE_DIR / "grafana/dashboards/transport-server.json").read_text())
    assert dash["panels"], "empty dashboard"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all("shmring_ws_" in t["expr"] for t in panel["targets"]), panel["title"]


def test_gpu_services_get_the_nvenc_driver_libraries(resolved):
    """NVENC needs the `video` driver capability; a reservation that listed driver
    capabilities would override NVIDIA_DRIVER_CAPABILITIES, so it names only `gpu`."""
    for name in ("genesis-sim", "training-runner", "app-cuda"):
        svc = resolved["services"][name]
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        caps = set(svc["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(","))
        assert {"compute", "utility", "video"} <= caps, f"{name}: {caps}"


def test_dockerfile_copies_what_exists():
    """Without a Docker engine here, check what a build would trip on first: every file
    copied from the build stage is produced there, every file copied from the context
    exists and is not excluded by .dockerignore, and every stage compose uses exists."""
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    ignored = [l.strip().rstrip("/") for l in (COMPOSE_DIR.parent / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    build_stage = dockerfile.split("FROM ${UBUNTU} AS build", 1)[1].split("\nFROM ", 1)[0]
    produced = set(re.findall(r"target/release/(?:examples/)?([\w-]+)", build_stage))
    copied_bins = {Path(p).name for line in re.findall(r"^COPY --from=build (.+)$", dockerfile, re.M)
                   for p in line.split()[:-1] if p.startswith("/out/bin/")}
    assert copied_bins and copied_bins <= produced, f"copied but not built: {copied_bins - produced}"
    assert "--out /out/wheels" in build_stage and "--features video" in build_stage
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        for src in line.split()[:-1]:
            if src == ".":
                continue
            assert (COMPOSE_DIR.parent / src).exists(), f"COPY of missing {src}"
            assert not any(src == i or src.startswith(i + "/") for i in ignored), f"{src} is .dockerignored"
    assert "target" in ignored and ".venv" in ignored, "the build context would include build output"


def test_every_pytest_in_an_image_has_a_timeout(resolved):
    """A test that hangs in a container must fail under its own name, as it does in
    scripts/test: every image that installs pytest installs pytest-timeout, and every
    pytest command (a service's or an image's default) passes --timeout."""
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    installs = [l for l in dockerfile.splitlines() if "pip install" in l and " pytest" in l]
    assert installs, "no image installs pytest any more: update this test"
    for line in installs:
        assert "pytest-timeout" in line, f"pytest without pytest-timeout: {line.strip()}"
    commands = [json.loads(c) for c in re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)]
    commands += [svc["command"] for svc in resolved["services"].values() if isinstance(svc.get("command"), list)]
    pytest_runs = [c for c in commands if "pytest" in c]
    assert pytest_runs, "no pytest command found: update this test"
    for c in pytest_runs:
        assert any(a.startswith("--timeout=") for a in c), f"pytest without --timeout: {c}"
