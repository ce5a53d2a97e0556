#!/usr/bin/python3
"""Static checks of the deployment files: docker-compose.yml, its host-network override, deploy/k8s/*.yaml.

Parses every manifest (PyYAML, Debian's python3-yaml) and checks that names, ports, labels and selectors,
volume and ConfigMap references agree with each other and with what the image and the binaries expect:
the image name, the coordinator's --listen port, the TPCOORD_* variables tp-worker / tpctl read (taken
from worker/main.cc, client/credentials.cc and coordinator/tpctl/tpctl.cc), the paths the Dockerfile
bakes in, the image's user id; and that both deployments are secure: the coordinator serves mutual TLS
from mounted secrets, and every client has a certificate and the job token.
Needs no Docker and no cluster.

    /usr/bin/python3 tests/compose/manifest_test.py [--repo DIR] [-v]
"""
import argparse
import copy
import glob
import json
import os
import re
import sys
import unittest

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.stderr.write("manifest_test: needs PyYAML (Debian's python3-yaml; deploy/install-deps.sh installs it)\n")
    sys.exit(1)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER_SERVICES = ["worker-0", "worker-1", "worker-2", "worker-3"]
AGENT_SERVICES = ["host-a", "host-b"]  # the `agents` profile: one tp-agent per "host", two workers each
ETCD_SERVICES = ["etcd-0", "etcd-1", "etcd-2"]
HA_COORDINATORS = ["coordinator-a", "coordinator-b"]
TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")
CLIENT_SECRETS = ("TPCOORD_TLS_CA", "TPCOORD_TLS_CERT", "TPCOORD_TLS_KEY")


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def load_yaml(path):
    return yaml.safe_load(read(path))


def k8s_documents(directory=os.path.join("deploy", "k8s")):
    docs = []
    for path in sorted(glob.glob(os.path.join(REPO, directory, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.relpath(path, REPO), doc))
    return docs


def interpolate(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with the variables unset: the defaults."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def env_names_read_by_binaries():
    """Every TPCOORD_* (and torchrun-style) variable name that tp-worker or tpctl reads."""
    names = set()
    for path in ("worker/main.cc", "client/credentials.cc", "coordinator/tpctl/tpctl.cc"):
        names |= set(re.findall(r'"((?:TPCOORD_|RANK\b|WORLD_SIZE\b|JOB_COMPLETION_INDEX\b)[A-Z_]*)"', read(path)))
    return names


def dockerfile_facts():
    text = read("deploy/docker/Dockerfile")
    uid = re.search(r"useradd[^\n]*--uid (\d+)", text)
    gid = re.search(r"groupadd[^\n]*--gid (\d+)", text)
    baked = set()
    for m in re.finditer(r"^COPY (?!--from)(.+)$", text, re.M):
        parts = m.group(1).split()
        sources, dest = parts[:-1], parts[-1]
        for src in sources:
            baked.add(dest + os.path.basename(src) if dest.endswith("/") else dest)
    binaries = set()
    for m in re.finditer(r"^COPY --from=\S+ ((?:[^\n]*\\\n)*[^\n]+)", text, re.M):  # with its continued lines
        parts = m.group(1).replace("\\\n", " ").split()
        binaries |= {os.path.basename(p) for p in parts[:-1]}
    # Programs of Debian packages the runtime image installs (deploy/install-deps.sh --runtime).
    runtime = re.search(r"runtime_packages=\(([^)]*)\)", read("deploy/install-deps.sh"))
    packaged = {"etcd"} if runtime and "etcd-server" in runtime.group(1).split() else set()
    return {"uid": int(uid.group(1)) if uid else None, "gid": int(gid.group(1)) if gid else None,
            "baked": baked, "binaries": binaries, "packaged": packaged}


def listen_port(args):
    """The port of --listen HOST:PORT in an argument list."""
    args = [interpolate(a) for a in args]
    for i, arg in enumerate(args):
        if arg == "--listen" and i + 1 < len(args):
            return int(args[i + 1].rsplit(":", 1)[1])
        if arg.startswith("--listen="):
            return int(arg.split("=", 1)[1].rsplit(":", 1)[1])
    return None


def flag_value(args, flag):
    args = [interpolate(a) for a in args]
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def under(path, mounts):
    """The mount (a mountPath) that holds `path`, or None."""
    return next((m for m in mounts if path and path.startswith(m.rstrip("/") + "/")), None)


def secure_errors(who, args, mounts, secret_mounts):
    """Problems of a coordinator command: mutual TLS from files in secret mounts, never plaintext."""
    errors = []
    if "--allow-insecure" in args:
        errors.append(f"{who}: --allow-insecure (plaintext beyond loopback)")
    for flag in TLS_FLAGS:
        path = flag_value(args, flag)
        if path is None:
            errors.append(f"{who}: no {flag} (the coordinator must serve mutual TLS)")
        elif under(path, secret_mounts) is None:
            errors.append(f"{who}: {flag} {path} is in no secret mount {sorted(secret_mounts)}")
    return errors


def client_secret_errors(who, env, secret_mounts, token=True):
    errors = []
    for name in CLIENT_SECRETS + (("TPCOORD_TOKEN_FILE",) if token else ()):
        if under(env.get(name), secret_mounts) is None:
            errors.append(f"{who}: {name} {env.get(name)} is in no secret mount {sorted(secret_mounts)}")
    return errors


# --- Kubernetes ----------------------------------------------------------------------------------------

def pod_spec(doc):
    if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def pod_labels(doc):
    return doc["spec"]["template"]["metadata"].get("labels", {})


def ha_errors(coordinator, container, args, by_kind, coordinator_services):
    """The HA coordinators: replicas, their etcd members, probes, where standbys send clients."""
    errors = []
    if coordinator["spec"].get("replicas", 1) < 2:
        errors.append("coordinator (HA): needs at least 2 replicas")
    if "--state-dir" in args or pod_spec(coordinator).get("volumes") and any(
            "persistentVolumeClaim" in v for v in pod_spec(coordinator)["volumes"]):
        errors.append("coordinator (HA): keeps state in etcd, not in a state directory")
    store = flag_value(args, "--state-store") or ""
    match = re.fullmatch(r"etcd://([^/]+)(/.*)?", store)
    sets = list(by_kind.get("StatefulSet", {}).values())
    if not match:
        errors.append(f"coordinator (HA): --state-store {store!r} is not etcd://HOST:PORT,.../PREFIX")
    elif len(sets) != 1:
        errors.append(f"coordinator (HA): expected one etcd StatefulSet, found {len(sets)}")
    else:
        etcd = sets[0]
        name, service = etcd["metadata"]["name"], etcd["spec"]["serviceName"]
        replicas = etcd["spec"].get("replicas", 1)
        members = [f"{name}-{i}.{service}:2379" for i in range(replicas)]
        if match.group(1).split(",") != members:
            errors.append(f"coordinator (HA): --state-store lists {match.group(1)}, the StatefulSet's members "
                          f"are {','.join(members)}")
        if replicas < 3 or replicas % 2 == 0:
            errors.append(f"etcd: {replicas} members; a cluster that survives a lost member needs an odd number >= 3")
        headless = by_kind.get("Service", {}).get(service)
        if not headless or headless["spec"].get("clusterIP") != "None":
            errors.append(f"etcd: serviceName {service} is not a headless Service")
        etcd_args = pod_spec(etcd)["containers"][0].get("args", [])
        cluster = flag_value(etcd_args, "--initial-cluster") or ""
        peers = [f"{name}-{i}=http://{name}-{i}.{service}:2380" for i in range(replicas)]
        if cluster.split(",") != peers:
            errors.append(f"etcd: --initial-cluster {cluster} is not its members {','.join(peers)}")
    if coordinator_services:
        service = coordinator_services[0]
        advertised = flag_value(args, "--advertise")
        expected = f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
        if advertised != expected:
            errors.append(f"coordinator (HA): --advertise {advertised}, clients reach it as {expected} (the name "
                          f"its certificate is for)")
    liveness = container.get("livenessProbe", {})
    if "tcpSocket" not in liveness:
        errors.append("coordinator (HA): livenessProbe must not be `tpctl health` (a standby is NOT_SERVING "
                      "and would be killed); a tcpSocket probe of its port")
    return errors


def check_k8s(docs, image, worker_env_names, facts, ds_config, ha=False):
    """Returns a list of problems (empty: consistent). `ha`: the coordinators of deploy/k8s/ha/ (state in the
    etcd StatefulSet there, several replicas) instead of ../coordinator.yaml's one."""
    errors = []
    by_kind = {}
    for path, doc in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in doc:
                errors.append(f"{path}: a document without {key}")
        name = doc.get("metadata", {}).get("name")
        kind = doc.get("kind")
        if name in by_kind.setdefault(kind, {}):
            errors.append(f"{path}: two {kind}s named {name}")
        by_kind[kind][name] = doc
    if errors:
        return errors
    config_maps = by_kind.get("ConfigMap", {})
    claims = by_kind.get("PersistentVolumeClaim", {})
    services = by_kind.get("Service", {})
    workloads = [d for kind in ("Deployment", "Job", "StatefulSet") for d in by_kind.get(kind, {}).values()]

    coordinators = [d for d in by_kind.get("Deployment", {}).values()
                    if any(c.get("command", [None])[0] == "tp-coordinator" for c in pod_spec(d)["containers"])]
    jobs = list(by_kind.get("Job", {}).values())
    if len(coordinators) != 1:
        errors.append(f"expected one coordinator Deployment, found {len(coordinators)}")
    if len(jobs) != 1:
        errors.append(f"expected one worker Job, found {len(jobs)}")
    if errors:
        return errors
    coordinator, job = coordinators[0], jobs[0]

    # Selectors and labels.
    for workload in workloads:
        name = workload["metadata"]["name"]
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if workload["kind"] in ("Deployment", "StatefulSet"):
            if not selector:
                errors.append(f"Deployment {name}: no selector.matchLabels")
            elif any(pod_labels(workload).get(k) != v for k, v in selector.items()):
                errors.append(f"Deployment {name}: selector {selector} does not match its pod labels")
    for name, service in services.items():
        selector = service["spec"].get("selector", {})
        targets = [w for w in workloads if selector and all(pod_labels(w).get(k) == v for k, v in selector.items())]
        if not targets:
            errors.append(f"Service {name}: selector {selector} matches no pod template")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            for workload in targets:
                container_ports = [p for c in pod_spec(workload)["containers"] for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in container_ports):
                    errors.append(f"Service {name}: targetPort {target} is no container port of "
                                  f"{workload['kind']} {workload['metadata']['name']}")

    # Volumes, claims, ConfigMaps, mounts.
    for workload in workloads:
        wname = f"{workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes.update({t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])})
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume and volume["persistentVolumeClaim"]["claimName"] not in claims:
                errors.append(f"{wname}: volume {volume['name']} claims unknown PVC "
                              f"{volume['persistentVolumeClaim']['claimName']}")
            if "configMap" in volume:
                cm = config_maps.get(volume["configMap"]["name"])
                if cm is None:
                    errors.append(f"{wname}: volume {volume['name']} names unknown ConfigMap "
                                  f"{volume['configMap']['name']}")
                else:
                    for item in volume["configMap"].get("items", []):
                        if item["key"] not in cm.get("data", {}):
                            errors.append(f"{wname}: ConfigMap {cm['metadata']['name']} has no key {item['key']}")
        for container in spec["containers"]:
            if container.get("image") != image:
                errors.append(f"{wname}: container {container['name']} runs image {container.get('image')}, "
                              f"compose builds {image}")
            if container.get("command", [None])[0] not in facts["binaries"] | facts["packaged"]:
                errors.append(f"{wname}: command {container.get('command')} is not one of the image's binaries "
                              f"{sorted(facts['binaries'])}")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"{wname}: mount {mount['name']} has no volume")
            for env in container.get("env", []):
                if env["name"].startswith("TPCOORD_") and env["name"] not in worker_env_names:
                    errors.append(f"{wname}: env {env['name']} is read by no tpcoord binary")
        security = spec.get("securityContext", {})
        if facts["uid"] is not None and security.get("runAsUser") != facts["uid"]:
            errors.append(f"{wname}: runAsUser {security.get('runAsUser')} is not the image's user {facts['uid']}")
        if facts["gid"] is not None and security.get("runAsGroup") != facts["gid"]:
            errors.append(f"{wname}: runAsGroup {security.get('runAsGroup')} is not the image's group {facts['gid']}")
        if facts["gid"] is not None and volumes and security.get("fsGroup") != facts["gid"]:
            errors.append(f"{wname}: fsGroup {security.get('fsGroup')} would leave its volumes unwritable for "
                          f"the image's group {facts['gid']}")

    # The coordinator: its port, its probes, its Service.
    ccontainer = pod_spec(coordinator)["containers"][0]
    port = listen_port(ccontainer.get("command", [])[1:] + ccontainer.get("args", []))
    if port is None:
        errors.append("coordinator: no --listen HOST:PORT in its command/args")
    if port not in [p["containerPort"] for p in ccontainer.get("ports", [])]:
        errors.append(f"coordinator: --listen port {port} is not a containerPort")
    # The metrics port: a named containerPort that the scrape annotations point at.
    cargs = ccontainer.get("command", [])[1:] + ccontainer.get("args", [])
    if "--metrics-listen" in cargs:
        metrics_port = int(cargs[cargs.index("--metrics-listen") + 1].rsplit(":", 1)[1])
        named = {p.get("name"): p["containerPort"] for p in ccontainer.get("ports", [])}
        if named.get("metrics") != metrics_port:
            errors.append(f"coordinator: --metrics-listen port {metrics_port} is not the containerPort named metrics")
        annotations = coordinator["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(metrics_port):
            errors.append(f"coordinator: the pod's prometheus.io/scrape and prometheus.io/port annotations do not "
                          f"point at its metrics port {metrics_port}: {annotations}")
    else:
        errors.append("coordinator: no --metrics-listen (the metrics port is deployed)")
    cenv = {e["name"]: e.get("value") for e in ccontainer.get("env", [])}
    # Standbys report NOT_SERVING: with HA, readiness keeps the Service on the leader, and liveness only
    # asks that the process listens.
    for probe in ("readinessProbe",) if ha else ("readinessProbe", "livenessProbe"):
        command = ccontainer.get(probe, {}).get("exec", {}).get("command")
        if command != ["tpctl", "health"]:
            errors.append(f"coordinator: {probe} is not `tpctl health` (the kubelet's gRPC probe speaks no TLS)")
        elif cenv.get("TPCOORD_COORDINATOR") != f"127.0.0.1:{port}":
            errors.append(f"coordinator: {probe} asks {cenv.get('TPCOORD_COORDINATOR')}, it listens on port {port}")

    # Security: mutual TLS from Secrets, and every client with a certificate (and the workers the token).
    def secret_mounts(workload, container):
        secrets = {v["name"]: v["secret"] for v in pod_spec(workload).get("volumes", []) if "secret" in v}
        mounts = {}
        for m in container.get("volumeMounts", []):
            if m["name"] in secrets:
                mounts[m["mountPath"]] = secrets[m["name"]]
        for path, secret in mounts.items():
            mode = secret.get("defaultMode", 0o644)
            if not mode & 0o040 or pod_spec(workload).get("securityContext", {}).get("fsGroup") is None:
                errors.append(f"{workload['metadata']['name']}: Secret {secret.get('secretName')} at {path} is "
                              f"unreadable for the pod user (defaultMode {oct(mode)} needs group read and fsGroup)")
        return mounts
    cmounts = secret_mounts(coordinator, ccontainer)
    errors += secure_errors("coordinator", ccontainer.get("args", []), [], cmounts)
    errors += client_secret_errors("coordinator (probes, tpctl)", cenv, cmounts, token=False)
    coordinator_services = [s for s in services.values()
                            if all(pod_labels(coordinator).get(k) == v for k, v in s["spec"].get("selector", {}).items())
                            and s["spec"].get("clusterIP") != "None"]
    if len(coordinator_services) != 1:
        errors.append(f"coordinator: expected one Service selecting it, found {len(coordinator_services)}")
    if pod_spec(coordinator).get("volumes") and not ha and coordinator["spec"].get("strategy", {}).get("type") != "Recreate":
        errors.append("coordinator: a Deployment with a state volume needs strategy Recreate (one coordinator "
                      "per state dir)")
    args = ccontainer.get("args", [])
    if ha:
        errors += ha_errors(coordinator, ccontainer, args, by_kind, coordinator_services)
    elif coordinator["spec"].get("replicas", 1) != 1:
        errors.append("coordinator: replicas must be 1")
    state_mounts = [m["mountPath"] for m in ccontainer.get("volumeMounts", [])]
    if "--state-dir" in args and args[args.index("--state-dir") + 1] not in state_mounts:
        errors.append(f"coordinator: --state-dir {args[args.index('--state-dir') + 1]} is not a volume mount")

    # The workers: an Indexed Job whose size is the world size, reaching the coordinator's Service.
    jspec = job["spec"]
    wcontainer = pod_spec(job)["containers"][0]
    env = {e["name"]: e for e in wcontainer.get("env", [])}
    value = lambda name: env.get(name, {}).get("value")  # noqa: E731
    if jspec.get("completionMode") != "Indexed":
        errors.append("Job: completionMode must be Indexed (JOB_COMPLETION_INDEX is the rank)")
    world = value("TPCOORD_WORLD_SIZE")
    if not (world and jspec.get("completions") == jspec.get("parallelism") == int(world)):
        errors.append(f"Job: completions {jspec.get('completions')} and parallelism {jspec.get('parallelism')} "
                      f"must both equal TPCOORD_WORLD_SIZE {world}")
    if "TPCOORD_RANK" in env or "RANK" in env:
        errors.append("Job: TPCOORD_RANK/RANK would shadow JOB_COMPLETION_INDEX")
    if coordinator_services:
        service = coordinator_services[0]
        expected = {f"{service['metadata']['name']}:{p['port']}" for p in service["spec"]["ports"]}
        if value("TPCOORD_COORDINATOR") not in expected:
            errors.append(f"Job: TPCOORD_COORDINATOR {value('TPCOORD_COORDINATOR')} is not the coordinator "
                          f"Service {sorted(expected)}")
    for name in ("TPCOORD_HOST", "TPCOORD_GLOO_INTERFACE"):
        field = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field != "status.podIP":
            errors.append(f"Job: {name} must come from the downward API status.podIP, not {field}")
    subdomain = pod_spec(job).get("subdomain")
    headless = services.get(subdomain)
    if not headless or headless["spec"].get("clusterIP") != "None":
        errors.append(f"Job: subdomain {subdomain} is not a headless Service")
    elif not all(pod_labels(job).get(k) == v for k, v in headless["spec"].get("selector", {}).items()):
        errors.append(f"Job: the headless Service {subdomain} does not select the worker pods")
    errors += client_secret_errors("Job", {n: e.get("value") for n, e in env.items()},
                                   secret_mounts(job, wcontainer))
    mounts = {m["mountPath"]: m["name"] for m in wcontainer.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(job).get("volumes", [])}
    config_path = value("TPCOORD_CONFIG") or ""
    config_volume = volumes.get(mounts.get(os.path.dirname(config_path)), {})
    if "configMap" not in config_volume:
        errors.append(f"Job: TPCOORD_CONFIG {config_path} is not in a ConfigMap mount")
    else:
        cm = config_maps.get(config_volume["configMap"]["name"], {})
        key = os.path.basename(config_path)
        items = config_volume["configMap"].get("items")
        if items:
            key = next((i["key"] for i in items if i["path"] == key), None)
        text = cm.get("data", {}).get(key)
        if text is None:
            errors.append(f"Job: ConfigMap {config_volume['configMap']['name']} has no key for {config_path}")
        elif json.loads(text) != ds_config:
            errors.append(f"ConfigMap {config_volume['configMap']['name']}: {key} differs from deploy/ds_config.json")
    output = value("TPCOORD_OUTPUT_DIR")
    if "persistentVolumeClaim" not in volumes.get(mounts.get(output), {}):
        errors.append(f"Job: TPCOORD_OUTPUT_DIR {output} is not on a PersistentVolumeClaim")
    claim = claims.get(volumes.get(mounts.get(output), {}).get("persistentVolumeClaim", {}).get("claimName"))
    if claim and "ReadWriteMany" not in claim["spec"].get("accessModes", []) and jspec.get("parallelism", 1) > 1:
        terms = (pod_spec(job).get("affinity", {}).get("podAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", []))
        if not any(t.get("topologyKey") == "kubernetes.io/hostname" and
                   all(pod_labels(job).get(k) == v for k, v in t.get("labelSelector", {}).get("matchLabels", {}).items())
                   for t in terms):
            errors.append(f"Job: {jspec.get('parallelism')} pods share the {claim['spec'].get('accessModes')} claim "
                          f"{claim['metadata']['name']} but nothing keeps them on one node")
    data = value("TPCOORD_DATA")
    if data not in facts["baked"]:
        errors.append(f"Job: TPCOORD_DATA {data} is not a file the Dockerfile bakes in {sorted(facts['baked'])}")
    if not (value("TPCOORD_RANDOM_INIT") or value("TPCOORD_MODEL_DIR")):
        errors.append("Job: give TPCOORD_RANDOM_INIT or TPCOORD_MODEL_DIR")
    return errors


# --- Compose -------------------------------------------------------------------------------------------

def service_env(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: interpolate(v) for k, v in env.items()}


def agent_errors(name, service, facts):
    """A "host" of the `agents` profile: tp-agent, baked into the image, starting tp-workers that together
    make the workers' world (--nnodes x --nproc-per-node), under its own profile."""
    errors = []
    command = service.get("command", [])
    if not command or command[0] != "tp-agent" or command[0] not in facts["binaries"]:
        errors.append(f"{name}: command {command} is not tp-agent as the image bakes it in")
        return errors
    if "--" not in command or command[command.index("--") + 1:] != ["tp-worker"]:
        errors.append(f"{name}: tp-agent does not start tp-worker after --: {command}")
        return errors
    flags = dict(zip(command[1:command.index("--"):2], command[2:command.index("--"):2]))
    world = int(flags.get("--nnodes", "0")) * int(flags.get("--nproc-per-node", "0"))
    if world != len(WORKER_SERVICES) or flags.get("--nnodes") != str(len(AGENT_SERVICES)):
        errors.append(f"{name}: --nnodes x --nproc-per-node is {world} workers on {flags.get('--nnodes')} hosts; "
                      f"the job has {len(WORKER_SERVICES)} on {len(AGENT_SERVICES)}")
    if service.get("profiles") != ["agents"]:
        errors.append(f"{name}: belongs to the agents profile, not {service.get('profiles')}")
    return errors


def ha_compose_errors(services, oservices, certs, secret_mounts, facts):
    """The `ha` profile: etcd members and coordinators on them, in the base file and in the override."""
    errors = []
    for name in ETCD_SERVICES + HA_COORDINATORS:
        if services[name].get("profiles") != ["ha"]:
            errors.append(f"{name}: must be in the ha profile only (profiles: [ha])")
    for layer, files in (("docker-compose.yml", services), ("override", oservices)):
        def command(name):
            return [interpolate(a) for a in files.get(name, {}).get("command") or services[name]["command"]]
        members = []
        for name in ETCD_SERVICES:
            args = command(name)
            if args[0] not in facts["packaged"]:
                errors.append(f"{layer}: {name}: command {args[0]} is not installed in the image")
            members.append(flag_value(args, "--advertise-client-urls").removeprefix("http://"))
        for name in HA_COORDINATORS:
            args = command(name)
            errors += secure_errors(f"{layer}: {name}", args, [], secret_mounts(services[name]))
            store = flag_value(args, "--state-store") or ""
            if store != f"etcd://{','.join(members)}/tpcoord":
                errors.append(f"{layer}: {name}: --state-store {store} is not the etcd members {members}")
            listen = flag_value(args, "--listen")
            advertise = flag_value(args, "--advertise") or ""
            expected = f"{name}:{listen.rsplit(':', 1)[1]}" if layer == "docker-compose.yml" else listen
            if advertise != expected:
                errors.append(f"{layer}: {name}: --advertise {advertise}, clients reach it as {expected}")
        replicas = [f"{n}:{listen_port(command(n))}" if layer == "docker-compose.yml" else flag_value(command(n), "--listen")
                    for n in HA_COORDINATORS]
        for name in HA_COORDINATORS:
            env = {**service_env(services[name]), **service_env(files.get(name, {}))}
            if env.get("TPCOORD_COORDINATOR") != ",".join(replicas):
                errors.append(f"{layer}: {name}: its health check asks {env.get('TPCOORD_COORDINATOR')}, not the "
                              f"replicas {','.join(replicas)}")
    for name in HA_COORDINATORS:
        if name not in certs.get("command", [])[2:]:
            errors.append(f"certs: the server certificate is not made for {name}")
        if services[name].get("healthcheck", {}).get("test", [])[1:3] != ["tpctl", "health"]:
            errors.append(f"{name}: its health check must be tpctl health")
        errors += client_secret_errors(f"{name} (health check, tpctl)", service_env(services[name]),
                                       secret_mounts(services[name]), token=True)
    return errors


def check_compose(base, override, worker_env_names, facts):
    errors = []
    if str(base.get("version")) != "2.4":
        errors.append(f"docker-compose.yml: version {base.get('version')}: Compose v1 needs 2.4 for "
                      "depends_on conditions")
    services = base.get("services", {})
    if set(services) != {"certs", "coordinator", *WORKER_SERVICES, *AGENT_SERVICES, *ETCD_SERVICES,
                         *HA_COORDINATORS}:
        errors.append(f"docker-compose.yml: services {sorted(services)}")
        return errors
    coordinator = services["coordinator"]

    # Security: `certs` makes the secrets volume, the coordinator serves mutual TLS from it, and every
    # client shows the client certificate and sends the token from it.
    certs = services["certs"]
    command = certs.get("command", [])
    if not command or f"/usr/local/bin/{command[0]}" not in facts["baked"]:
        errors.append(f"certs: command {command} is not a script the Dockerfile bakes in")
    if "coordinator" not in command[2:]:
        errors.append(f"certs: the server certificate is not made for the service name coordinator: {command}")
    secrets_dir = command[1] if len(command) > 1 else None
    secrets_volume = next((v.split(":")[0] for v in certs.get("volumes", []) if v.split(":")[1] == secrets_dir), None)
    if secrets_volume is None:
        errors.append(f"certs: writes {secrets_dir}, which is no volume")
    if coordinator.get("depends_on", {}).get("certs", {}).get("condition") != "service_completed_successfully":
        errors.append("coordinator: must depend on certs: condition: service_completed_successfully")

    def secret_mounts(service):
        return [v.split(":")[1] for v in service.get("volumes", []) if v.split(":")[0] == secrets_volume]
    errors += secure_errors("coordinator", coordinator.get("command", []), [], secret_mounts(coordinator))
    errors += client_secret_errors("coordinator (health check, tpctl)", service_env(coordinator),
                                   secret_mounts(coordinator), token=True)
    for name in WORKER_SERVICES + AGENT_SERVICES:
        errors += client_secret_errors(name, service_env(services[name]), secret_mounts(services[name]))
    ocommand = override.get("services", {}).get("coordinator", {}).get("command", [])
    errors += secure_errors("override: coordinator", ocommand, [], secret_mounts(coordinator))
    image = interpolate(coordinator.get("image"))
    port = listen_port(coordinator.get("command", []))
    if coordinator.get("healthcheck", {}).get("test", [])[1:3] != ["tpctl", "health"]:
        errors.append("coordinator: its health check must be tpctl health")
    if service_env(coordinator).get("TPCOORD_COORDINATOR") != f"127.0.0.1:{port}":
        errors.append(f"coordinator: the health check asks {service_env(coordinator).get('TPCOORD_COORDINATOR')}, "
                      f"it listens on port {port}")
    named_volumes = set((base.get("volumes") or {}).keys())
    ranks, world_sizes = [], set()
    for name, service in services.items():
        if interpolate(service.get("image")) != image:
            errors.append(f"{name}: image {service.get('image')} differs from the coordinator's {image}")
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")) and source not in named_volumes:
                errors.append(f"{name}: volume {source} is not declared under volumes:")
        if service.get("networks") or service.get("network_mode"):
            errors.append(f"{name}: the base file keeps the default network (the override sets host)")
        if name in ("certs", "coordinator", *ETCD_SERVICES, *HA_COORDINATORS):
            continue
        env = service_env(service)
        for key in env:
            if key not in worker_env_names:
                errors.append(f"{name}: {key} is read by no tpcoord binary")
        if service.get("depends_on", {}).get("coordinator", {}).get("condition") != "service_healthy":
            errors.append(f"{name}: must depend on coordinator: condition: service_healthy")
        if env.get("TPCOORD_COORDINATOR") != f"coordinator:{port}":
            errors.append(f"{name}: TPCOORD_COORDINATOR {env.get('TPCOORD_COORDINATOR')} is not coordinator:{port}")
        if name in AGENT_SERVICES:
            errors += agent_errors(name, service, facts)
            continue
        if service.get("command", [None])[0] != "tp-worker":
            errors.append(f"{name}: command {service.get('command')} is not tp-worker")
        ranks.append(env.get("TPCOORD_RANK"))
        world_sizes.add(env.get("TPCOORD_WORLD_SIZE"))
        for var in ("TPCOORD_CONFIG", "TPCOORD_DATA"):
            if env.get(var) not in facts["baked"]:
                errors.append(f"{name}: {var} {env.get(var)} is not baked into the image")
        output = env.get("TPCOORD_OUTPUT_DIR")
        if not any(v.split(":")[1] == output for v in service.get("volumes", [])):
            errors.append(f"{name}: TPCOORD_OUTPUT_DIR {output} is not a volume")
    if world_sizes != {str(len(WORKER_SERVICES))}:
        errors.append(f"workers: TPCOORD_WORLD_SIZE {sorted(world_sizes)} is not {len(WORKER_SERVICES)}")
    if sorted(ranks) != [str(r) for r in range(len(WORKER_SERVICES))]:
        errors.append(f"workers: ranks {ranks} are not 0..{len(WORKER_SERVICES) - 1}")

    errors += ha_compose_errors(services, override.get("services", {}), certs, secret_mounts, facts)

    # The host-network override: every service on the host network, one address for the coordinator.
    oservices = override.get("services", {})
    if set(oservices) != set(services):
        errors.append(f"override: services {sorted(oservices)} differ from the base file's {sorted(services)}")
    for name in services:
        if oservices.get(name, {}).get("network_mode") != "host":
            errors.append(f"override: {name} is not on the host network (Compose would create a network)")
    if override.get("networks"):
        errors.append("override: declares networks")
    ocoordinator = oservices.get("coordinator", {})
    command = ocoordinator.get("command", coordinator.get("command"))
    listen = interpolate(command[command.index("--listen") + 1]) if "--listen" in command else None
    if not listen or not listen.startswith("127.0.0.1:"):
        errors.append(f"override: the coordinator listens on {listen}, not 127.0.0.1")
    if service_env(ocoordinator).get("TPCOORD_COORDINATOR") != listen:
        errors.append(f"override: the coordinator's health check asks "
                      f"{service_env(ocoordinator).get('TPCOORD_COORDINATOR')}, it listens on {listen}")
    for name in WORKER_SERVICES:
        env = service_env(oservices.get(name, {}))
        if env.get("TPCOORD_COORDINATOR") != listen:
            errors.append(f"override: {name} asks {env.get('TPCOORD_COORDINATOR')}, the coordinator is {listen}")
        for var in ("TPCOORD_HOST", "TPCOORD_GLOO_INTERFACE"):
            if env.get(var) != "127.0.0.1":
                errors.append(f"override: {name} {var} is {env.get(var)}, not 127.0.0.1")
        for key in env:
            if key not in worker_env_names:
                errors.append(f"override: {name}: {key} is read by no tpcoord binary")
    return errors


class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = load_yaml("docker-compose.yml")
        cls.override = load_yaml("tests/compose/docker-compose.host.yml")
        cls.docs = k8s_documents()
        cls.env_names = env_names_read_by_binaries()
        cls.facts = dockerfile_facts()
        cls.ds_config = json.loads(read("deploy/ds_config.json"))
        cls.image = interpolate(cls.base["services"]["coordinator"]["image"])

    def k8s_errors(self, docs=None):
        return check_k8s(docs if docs is not None else self.docs, self.image, self.env_names, self.facts,
                         self.ds_config)

    def test_sources_of_truth_are_found(self):
        self.assertIn("TPCOORD_COORDINATOR", self.env_names)
        self.assertIn("JOB_COMPLETION_INDEX", self.env_names)
        self.assertEqual(self.facts["binaries"], {"tp-coordinator", "tpctl", "tp-worker", "tp-agent"})
        self.assertIn("/opt/tpcoord/data/public_domain.txt", self.facts["baked"])
        self.assertIn("/opt/tpcoord/ds_config.json", self.facts["baked"])
        self.assertIn("/usr/local/bin/tpcoord-make-secrets", self.facts["baked"])
        self.assertIn("TPCOORD_TOKEN_FILE", self.env_names)
        self.assertEqual(self.facts["uid"], 10001)
        self.assertEqual(self.facts["gid"], 10001)
        self.assertEqual(self.image, "tpcoord:latest")
        self.assertEqual(len(self.docs), 7)

    def test_k8s_agents_manifest_agrees(self):
        # deploy/k8s/agents/: one pod per node running tp-agent, which starts the node's tp-workers.
        docs = k8s_documents(os.path.join("deploy", "k8s", "agents"))
        job = next(d for _, d in docs if d["kind"] == "Job")
        claims = {d["metadata"]["name"] for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        command = container["command"]
        self.assertEqual(command[0], "tp-agent")
        self.assertIn(command[0], self.facts["binaries"])
        self.assertEqual(command[command.index("--") + 1:], ["tp-worker"])
        flags = dict(zip(command[1:command.index("--"):2], command[2:command.index("--"):2]))
        self.assertEqual(flags["--nnodes"], str(job["spec"]["completions"]))
        self.assertEqual(job["spec"]["completions"], job["spec"]["parallelism"])
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        self.assertEqual(anti["topologyKey"], "kubernetes.io/hostname")
        self.assertEqual(anti["labelSelector"]["matchLabels"], job["spec"]["template"]["metadata"]["labels"])
        for rule in job["spec"]["podFailurePolicy"]["rules"]:
            if "onExitCodes" in rule:
                self.assertEqual(rule["onExitCodes"]["containerName"], container["name"])
        for var in container["env"]:
            self.assertIn(var["name"], self.env_names)
        env = {v["name"]: v.get("value") for v in container["env"]}
        self.assertEqual(env["TPCOORD_DATA"], "/opt/tpcoord/data/public_domain.txt")
        self.assertIn(env["TPCOORD_DATA"], self.facts["baked"])
        # The volumes it mounts are the claim it makes, and the ConfigMap and Secrets the others make.
        made = {(d["kind"], d["metadata"]["name"]) for _, d in self.docs}
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                self.assertIn(volume["persistentVolumeClaim"]["claimName"], claims)
            if "configMap" in volume:
                self.assertIn(("ConfigMap", volume["configMap"]["name"]), made)
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.assertEqual(os.path.dirname(env["TPCOORD_CONFIG"]), mounts["ds-config"])
        self.assertEqual(os.path.dirname(env["TPCOORD_TOKEN_FILE"]), mounts["job-token"])
        self.assertEqual(env["TPCOORD_OUTPUT_DIR"], mounts["checkpoints"])

    def test_compose_files_agree(self):
        self.assertEqual(check_compose(self.base, self.override, self.env_names, self.facts), [])

    def test_k8s_manifests_agree(self):
        self.assertEqual(self.k8s_errors(), [])

    def test_compose_ha_profile_checks_bite(self):
        base, override = copy.deepcopy(self.base), copy.deepcopy(self.override)
        command = base["services"]["coordinator-b"]["command"]
        command[command.index("--state-store") + 1] = "etcd://etcd-0:2379/tpcoord"
        command = override["services"]["coordinator-a"]["command"]
        command[command.index("--advertise") + 1] = "elsewhere:1"
        del base["services"]["etcd-2"]["profiles"]
        problems = check_compose(base, override, self.env_names, self.facts)
        self.assertTrue(any("coordinator-b: --state-store etcd://etcd-0:2379/tpcoord is not" in p for p in problems),
                        problems)
        self.assertTrue(any("override: coordinator-a: --advertise elsewhere:1" in p for p in problems), problems)
        self.assertTrue(any("etcd-2: must be in the ha profile only" in p for p in problems), problems)

    def test_k8s_ha_manifests_agree(self):
        # deploy/k8s/ha/ replaces coordinator.yaml; the workers and their config stay.
        docs = [d for d in self.docs if d[0] != os.path.join("deploy", "k8s", "coordinator.yaml")]
        docs += k8s_documents(os.path.join("deploy", "k8s", "ha"))
        self.assertEqual(check_k8s(docs, self.image, self.env_names, self.facts, self.ds_config, ha=True), [])
        # And each check bites: the standby killed by its liveness probe, etcd members the store does not list.
        broken = copy.deepcopy(docs)
        for _, doc in broken:
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "tpcoord-coordinator":
                doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["tpctl", "health"]}}
            if doc["kind"] == "StatefulSet":
                doc["spec"]["replicas"] = 5
        problems = check_k8s(broken, self.image, self.env_names, self.facts, self.ds_config, ha=True)
        self.assertTrue(any("livenessProbe must not be" in p for p in problems), problems)
        self.assertTrue(any("--state-store lists" in p for p in problems), problems)

    def test_grafana_dashboard_asks_for_metrics_the_coordinator_has(self):
        dashboard = json.loads(read("deploy/grafana/tpcoord-dashboard.json"))
        defined = set()
        for path in glob.glob(os.path.join(REPO, "coordinator", "**", "*.cc"), recursive=True):
            with open(path, encoding="utf-8") as f:
                defined |= set(re.findall(r'"(tpcoord_[a-z_]+)"', f.read()))
        self.assertIn("tpcoord_job_loss", defined)
        asked = set()
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                for name in re.findall(r"\b(tpcoord_[a-z_]+)", target["expr"]):
                    asked.add(re.sub(r"_(bucket|count|sum)$", "", name))
        self.assertGreater(len(asked), 10)
        self.assertEqual(asked - defined, set())
        # Per-job series are labelled job_id: Prometheus' own "job" label would shadow a "job" label.
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                self.assertNotRegex(target["expr"], r"[{,]job=~?", panel["title"])

    def test_catches_a_metrics_port_without_its_annotation(self):
        broken = copy.deepcopy(self.docs)
        for _, doc in broken:
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "tpcoord-coordinator":
                doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9000"
        self.assertTrue(any("prometheus.io/port annotations do not point" in p for p in self.k8s_errors(broken)))

    def test_failures_restart_only_what_a_restart_can_cure(self):
        # k8s: fatal configuration (3) and usage (2) fail the Job; other failures replace the pod, a bounded
        # number of times per index; pods must not restart in place (the Job replaces them).
        job = next(doc for _, doc in self.docs if doc["kind"] == "Job")
        spec = job["spec"]
        self.assertEqual(spec["template"]["spec"]["restartPolicy"], "Never")
        self.assertGreater(spec.get("backoffLimitPerIndex", 0), 0)
        rules = spec["podFailurePolicy"]["rules"]
        fail_job = [r for r in rules if r["action"] == "FailJob"]
        self.assertEqual(len(fail_job), 1)
        self.assertEqual(fail_job[0]["onExitCodes"]["operator"], "In")
        self.assertEqual(sorted(fail_job[0]["onExitCodes"]["values"]), [2, 3])
        count = [r for r in rules if r["action"] == "Count" and "onExitCodes" in r]
        self.assertEqual(count[0]["onExitCodes"], {"containerName": "worker", "operator": "NotIn", "values": [0, 2, 3]})
        worker_env = {e["name"]: e.get("value") for e in pod_spec(job)["containers"][0]["env"]}
        self.assertGreater(int(worker_env["TPCOORD_MAX_RESTARTS"]), 0)
        # compose: Docker restarts a worker whose container dies, a bounded number of times.
        for name in WORKER_SERVICES:
            service = self.base["services"][name]
            self.assertRegex(service["restart"], r"^on-failure:[1-9][0-9]*$", name)
            self.assertGreater(int(interpolate(service_env(service)["TPCOORD_MAX_RESTARTS"])), 0, name)

    def test_any_tp_config_leaves_the_shape_open(self):
        config = json.loads(read("deploy/docker/ds_config_any_tp.json"))
        self.assertNotIn("train_batch_size", config)
        self.assertNotIn("autotp_size", config.get("tensor_parallel", {}))
        expected = copy.deepcopy(self.ds_config)
        for key in ("train_batch_size", "tensor_parallel"):
            expected.pop(key)
        self.assertEqual(config, expected)

    # The checks themselves catch what they are for.
    def mutated(self, kind, name, change):
        docs = copy.deepcopy(self.docs)
        for _, doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                change(doc)
        return self.k8s_errors(docs)

    def test_catches_a_wrong_service_port(self):
        def change(doc):
            doc["spec"]["ports"][0]["targetPort"] = 50052
        self.assertTrue(any("targetPort" in e for e in self.mutated("Service", "tpcoord-coordinator", change)))

    def test_catches_a_probe_on_another_port(self):
        def change(doc):
            doc["spec"]["template"]["spec"]["containers"][0]["args"][1] = "0.0.0.0:6000"
        errors = self.mutated("Deployment", "tpcoord-coordinator", change)
        self.assertTrue(any("readinessProbe" in e for e in errors), errors)

    def test_catches_a_missing_config_map_and_claim(self):
        def change(doc):
            volumes = doc["spec"]["template"]["spec"]["volumes"]
            volumes[0]["configMap"]["name"] = "nope"
            volumes[1]["persistentVolumeClaim"]["claimName"] = "nope"
        errors = self.mutated("Job", "tpcoord-train", change)
        self.assertTrue(any("unknown ConfigMap" in e for e in errors), errors)
        self.assertTrue(any("unknown PVC" in e for e in errors), errors)

    def test_catches_an_unknown_env_name_and_a_world_size_mismatch(self):
        def change(doc):
            env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
            env.append({"name": "TPCOORD_WORLDSIZE", "value": "4"})
            doc["spec"]["parallelism"] = 2
        errors = self.mutated("Job", "tpcoord-train", change)
        self.assertTrue(any("TPCOORD_WORLDSIZE" in e for e in errors), errors)
        self.assertTrue(any("parallelism" in e for e in errors), errors)

    def test_catches_a_shared_read_write_once_claim_without_affinity(self):
        def change(doc):
            del doc["spec"]["template"]["spec"]["affinity"]
        errors = self.mutated("Job", "tpcoord-train", change)
        self.assertTrue(any("nothing keeps them on one node" in e for e in errors), errors)

    def test_catches_a_selector_that_matches_nothing(self):
        def change(doc):
            doc["spec"]["selector"]["app.kubernetes.io/component"] = "workers"
        errors = self.mutated("Service", "tpcoord-workers", change)
        self.assertTrue(any("matches no pod template" in e for e in errors), errors)

    def test_catches_a_plaintext_coordinator_and_a_client_without_a_certificate(self):
        def change(doc):
            args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            del args[args.index("--tls-client-ca"):]
            args.append("--allow-insecure")
        errors = self.mutated("Deployment", "tpcoord-coordinator", change)
        self.assertTrue(any("no --tls-client-ca" in e for e in errors), errors)
        self.assertTrue(any("--allow-insecure" in e for e in errors), errors)

        def unmount(doc):
            spec = doc["spec"]["template"]["spec"]
            spec["containers"][0]["volumeMounts"] = [m for m in spec["containers"][0]["volumeMounts"]
                                                     if m["name"] != "client-tls"]
        errors = self.mutated("Job", "tpcoord-train", unmount)
        self.assertTrue(any("TPCOORD_TLS_CERT" in e for e in errors), errors)

    def test_catches_a_compose_worker_without_the_token(self):
        base = copy.deepcopy(self.base)
        del base["x-worker-env"]["TPCOORD_TOKEN_FILE"]
        base["services"]["worker-1"]["environment"].pop("TPCOORD_TOKEN_FILE", None)
        base["services"]["coordinator"]["depends_on"] = {}
        errors = check_compose(base, self.override, self.env_names, self.facts)
        self.assertTrue(any("worker-1: TPCOORD_TOKEN_FILE" in e for e in errors), errors)
        self.assertTrue(any("depend on certs" in e for e in errors), errors)

    def test_catches_a_service_left_off_the_host_network(self):
        override = copy.deepcopy(self.override)
        del override["services"]["worker-2"]["network_mode"]
        errors = check_compose(self.base, override, self.env_names, self.facts)
        self.assertTrue(any("worker-2 is not on the host network" in e for e in errors), errors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default=REPO)
    args, rest = parser.parse_known_args()
    REPO = os.path.abspath(args.repo)
    unittest.main(argv=[sys.argv[0]] + rest)
