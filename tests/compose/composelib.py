"""What the compose tests share: one compose project driven by Debian's
docker-compose through the private podman service of scripts/test-compose.sh,
and podman itself for what the API does not show (health checks, exec)."""

import os
import subprocess

import chatlib  # tests/integration, on the path of every compose module


def timing(step, seconds):
    with open(os.environ["COMPOSE_TEST_TIMINGS"], "a") as f:
        f.write(f"{step} {seconds:.1f}\n")


def podman(*args, timeout=60):
    return subprocess.run(["podman", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def wait_for(cond, timeout, what):
    """chatlib's wait_for, polling every 0.25 s (a health check runs a process in a container)."""
    return chatlib.wait_for(cond, timeout, interval=0.25, what=what)


class Project:
    def __init__(self, compose_file, name, profiles=()):
        self.file = compose_file
        self.name = name
        self.label = f"label=com.docker.compose.project={name}"
        self.profile_args = [a for p in profiles for a in ("--profile", p)]

    def compose(self, *args, timeout=300, check=True):
        cmd = ["docker-compose", "--ansi", "never", "-f", str(self.file), "-p", self.name,
               "--env-file", os.environ["COMPOSE_TEST_ENV_FILE"], *args]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}"
        return r

    def container(self, service):
        return f"{self.name}_{service}_1"

    def logs(self, service, n=40):
        return podman("logs", "--tail", str(n), self.container(service)).stdout

    def healthy(self, service):
        # runs the image's HEALTHCHECK now (podman without systemd schedules none)
        return podman("healthcheck", "run", self.container(service), timeout=30).returncode == 0

    def exited_ok(self, service):
        r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                   self.container(service))
        return r.stdout.split() == ["exited", "0"]

    def down(self):
        """`down -v` as podman needs it: twice. podman refuses to remove `net` while a
        container sharing its namespace exists, and docker-compose 1.29 removes the
        stopped containers all at once, so the first pass may fail on `net` (and
        the network) alone; the second removes them and the volumes."""
        args = [*self.profile_args, "down", "-v", "--remove-orphans", "--timeout", "15"]
        first = self.compose(*args, check=False)
        if first.returncode != 0:
            errors = [ln for ln in first.stdout.splitlines() if ln.startswith("ERROR: for ")]
            net = self.container("net")
            assert errors and all(e.startswith(f"ERROR: for {net} ") for e in errors), \
                f"down failed on more than `net`:\n{first.stdout}"
        return self.compose(*args, check=False)

    def left_behind(self):
        """Containers, volumes, networks and pods of the project still in podman."""
        out = {}
        for kind, cmd in (("containers", ["ps", "-a", "-q", "--filter", self.label]),
                          ("volumes", ["volume", "ls", "-q", "--filter", self.label]),
                          ("networks", ["network", "ls", "-q", "--filter", self.label]),
                          ("pods", ["pod", "ps", "-q", "--filter", self.label])):
            r = podman(*cmd)
            assert r.returncode == 0, r.stdout
            if r.stdout.split():
                out[kind] = r.stdout.split()
        return out
