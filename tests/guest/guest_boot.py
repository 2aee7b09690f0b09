#!/usr/bin/env python3
"""Boots the runner image under QEMU (TCG) once per case and checks the guest side of the dispatcher's hand-over.

Cases (tests/guest/README.md):
  jit-snippet   NoCloud drive with the JIT user-data the dispatcher renders for a snippet pool
  v0-snippet    NoCloud drive with the seed template (runner-user-data.pkrtpl) rendered with a registration token
  jit-agent     Proxmox's own generated user-data (no credential); the JIT config arrives through the QEMU guest
                agent: guest-ping until it answers, then guest-file-open/write/close as Proxmox's agent/file-write
  bad-owner     negative: JIT user-data whose write_files owner does not exist in the image; the checks must fail
                and the failure must carry cloud-init's own error

Per boot: the runner stand-in ran once with the right credential (its SHA-256), the credential file was gone when it
started, no file on the disk holds the credential after power-off (cloud-init's instance data included, the journal
read with journalctl), no file job code could read held it at job time, cloud-init reported no error, and the VM
powered itself off. Timings are printed.

Standard library only. Needs root (loop mount of the powered-off disk), qemu-system-x86_64, genisoimage, unshare,
journalctl.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRINT_LOCK = threading.Lock()
RECORD = "opt/actions-runner/_standin/record"


def say(*parts):
    with PRINT_LOCK:
        print(*parts, flush=True)


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


# --- the cloud-init drive, as Proxmox builds it (PVE::QemuServer::Cloudinit::generate_nocloud) -----------------

MAC = "52:54:00:12:34:56"


def proxmox_network_config():
    # nocloud_network() for net0 with ipconfig0=ip=dhcp
    return (
        "version: 1\n"
        "config:\n"
        "    - type: physical\n"
        "      name: eth0\n"
        f"      mac_address: '{MAC}'\n"
        "      subnets:\n"
        "      - type: dhcp4\n"
    )


def proxmox_generated_user_data(vm_name, ciupgrade=True):
    # cloudinit_userdata() for a VM without cicustom user=, ciuser, cipassword or sshkeys (agent injection).
    content = "#cloud-config\n"
    content += f"hostname: {vm_name}\n"
    content += "manage_etc_hosts: true\n"
    content += "chpasswd:\n  expire: False\n"
    content += "users:\n  - default\n"
    if ciupgrade:
        content += "package_upgrade: true\n"
    return content


def make_cidata(work, user_data):
    d = work / "cidata"
    d.mkdir()
    network = proxmox_network_config()
    (d / "user-data").write_text(user_data)
    (d / "network-config").write_text(network)
    (d / "meta-data").write_text(f"instance-id: {hashlib.sha1((user_data + network).encode()).hexdigest()}\n")
    (d / "vendor-data").write_text("")
    iso = work / "cidata.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-iso-level", "3", "-R", "-V", "cidata", "-o", str(iso), str(d)], check=True
    )
    shutil.rmtree(d)  # the drive is the only copy, as on Proxmox once the snippet is deleted
    return iso


# --- the QEMU guest agent, as Proxmox talks to it --------------------------------------------------------------


class Agent:
    def __init__(self, path):
        self.path = str(path)
        self.sock = None
        self.buf = b""

    def connect(self):
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.path)
            self.sock = s
            self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read_json(self, deadline):
        while True:
            self.buf = self.buf.lstrip(b"\xff \r\n")
            if self.buf:
                try:
                    # latin-1 keeps character and byte offsets equal (the agent's JSON is ASCII anyway)
                    obj, end = json.JSONDecoder().raw_decode(self.buf.decode("latin-1"))
                    self.buf = self.buf[end:]
                    return obj
                except json.JSONDecodeError:
                    pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from the guest agent")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("guest agent socket closed")
            self.buf += chunk

    def sync(self, timeout):
        """guest-sync-delimited, as qemu-server does before each command: discards stale answers."""
        self.connect()
        token = random.randint(1, 2**31)
        self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_json(deadline)
            if answer.get("return") == token:
                return

    def call(self, command, arguments=None, timeout=10):
        self.sync(timeout)
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        answer = self._read_json(time.monotonic() + timeout)
        if "error" in answer:
            raise RuntimeError(f"{command}: {answer['error']}")
        return answer.get("return")


class Vm:
    """The QEMU process; reaped with os.wait4 so that its CPU time is known."""

    def __init__(self, cmd, stderr):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        self.returncode = None
        self.cpu_s = None

    def _reap(self, flags):
        if self.returncode is None:
            pid, status, rusage = os.wait4(self.proc.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s = round(rusage.ru_utime + rusage.ru_stime, 1)
                self.proc.returncode = self.returncode
        return self.returncode

    def running(self):
        return self._reap(os.WNOHANG) is None

    def wait(self):
        return self._reap(0)


def agent_inject(sock_path, path, content, deadline, vm):
    """POST agent/ping until it answers, then agent/file-write (qemu-server: file-open wb, one file-write of
    encode_base64(content), file-close). Returns the time the agent first answered (s since start)."""
    agent = Agent(sock_path)
    while True:
        if not vm.running():
            raise RuntimeError("the VM stopped before its guest agent answered")
        if time.monotonic() > deadline:
            raise TimeoutError("the guest agent never answered guest-ping")
        try:
            agent.call("guest-ping", timeout=3)
            break
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            agent.close()
            time.sleep(1)
    answered = time.monotonic()
    handle = agent.call("guest-file-open", {"path": path, "mode": "wb"})
    # Perl's encode_base64 (MIME: 76-character lines, each ending in "\n"), exactly what Proxmox sends.
    agent.call("guest-file-write", {"handle": handle, "buf-b64": base64.encodebytes(content.encode()).decode()})
    agent.call("guest-file-close", {"handle": handle})
    agent.close()
    return answered


# --- after power-off: what is on the disk ----------------------------------------------------------------------


def patterns(credential):
    """Byte strings that betray a copy of the credential: itself, pieces of it (a copy split across lines), and
    the stable middle of its base64 encoding at each alignment (a copy inside a base64-encoded document)."""
    raw = credential.encode()
    pats = {"credential": raw}
    if len(raw) >= 96:
        for i, at in enumerate((len(raw) // 4, len(raw) // 2, 3 * len(raw) // 4)):
            pats[f"piece{i}"] = raw[at : at + 32]
    for off in range(3):
        enc = base64.b64encode(b"\0" * off + raw)
        pats[f"base64@{off}"] = enc[8:-8][:64]
    return pats


def scan_tree(root, pats, skip):
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            rel = "/" + str(p.relative_to(root))
            if rel in skip or p.is_symlink() or not p.is_file():
                continue
            try:
                data = p.read_bytes()
            except OSError:
                continue
            kinds = [k for k, v in pats.items() if v in data]
            if kinds:
                hits.append(f"{rel} ({', '.join(kinds)})")
    return hits


def scan_journal(root, pats):
    jdir = root / "var/log/journal"
    if not jdir.is_dir():
        return [], "no persistent journal"
    r = subprocess.run(
        ["journalctl", f"--directory={jdir}", "-o", "export", "--no-pager"], capture_output=True, timeout=120
    )
    if r.returncode != 0 and not r.stdout:
        return [], f"journalctl could not read it: {r.stderr.decode(errors='replace').strip()[:200]}"
    kinds = [k for k, v in pats.items() if v in r.stdout]
    return ([f"journal ({', '.join(kinds)})"] if kinds else []), None


def parse_record(text):
    runs, cur = [], None
    for line in text.splitlines():
        if line.startswith("begin "):
            cur = {}
        elif line.startswith("end ") and cur is not None:
            runs.append(cur)
            cur = None
        elif cur is not None and "=" in line:
            k, v = line.split("=", 1)
            cur[k] = v
    return runs


def cloud_init_errors(root):
    """cloud-init's own verdict: result.json (errors, recoverable errors), status.json per stage, and its log's
    WARNING/ERROR lines when a stage never finished."""
    errors = []
    result = root / "var/lib/cloud/data/result.json"
    status = root / "var/lib/cloud/data/status.json"
    finished = False
    if result.is_file():
        v1 = json.loads(result.read_text()).get("v1", {})
        finished = True
        errors += [f"result.json error: {e}" for e in v1.get("errors", [])]
        for level, msgs in (v1.get("recoverable_errors") or {}).items():
            errors += [f"result.json {level}: {m}" for m in msgs]
    if status.is_file():
        v1 = json.loads(status.read_text()).get("v1", {})
        for stage, st in v1.items():
            if not isinstance(st, dict):
                continue
            if not finished:
                errors += [f"status.json {stage} error: {e}" for e in st.get("errors", [])]
                for level, msgs in (st.get("recoverable_errors") or {}).items():
                    errors += [f"status.json {stage} {level}: {m}" for m in msgs]
    if not finished:
        log = root / "var/log/cloud-init.log"
        if log.is_file():
            errors += [
                "cloud-init.log: " + line.split(" - ", 1)[-1]
                for line in log.read_text(errors="replace").splitlines()
                if "[WARNING]" in line or "[ERROR]" in line or "[CRITICAL]" in line
            ]
    return finished, errors


class Mounted:
    def __init__(self, disk, at):
        self.disk, self.at = disk, at

    def __enter__(self):
        self.at.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop,nodev,nosuid,noexec", str(self.disk), str(self.at)], check=True)
        return self.at

    def __exit__(self, *exc):
        subprocess.run(["umount", str(self.at)], check=False)


# --- one boot ---------------------------------------------------------------------------------------------------


class Case:
    def __init__(self, name, user_data, credential, kind, agent_file=None, cmdline=""):
        self.name, self.user_data, self.credential, self.kind = name, user_data, credential, kind
        self.agent_file, self.cmdline = agent_file, cmdline


def boot(case, image, workroot, timeout, keep):
    work = Path(tempfile.mkdtemp(prefix=f"{case.name}.", dir=workroot))
    t = {}
    problems = []
    try:
        disk = work / "disk.raw"
        subprocess.run(["cp", "--sparse=always", str(image / "root.raw"), str(disk)], check=True)
        iso = make_cidata(work, case.user_data)
        qga = work / "qga.sock"
        # For speed under emulation only: mitigations=off (a throw-away test VM; speculation barriers are costly
        # under TCG) and tsc=reliable (TCG's TSC is the host clock; the watchdog would fall back to the HPET).
        append = "root=/dev/vda rw console=ttyS0 quiet mitigations=off tsc=reliable " + case.cmdline
        cmd = [
            "timeout", "--kill-after=10", str(timeout),
            # No network namespace of ours has a route anywhere: whatever the guest tries stays on this machine.
            "unshare", "--net", "--",
            # -nodefaults -vga none: no VGA (its framebuffer console), parallel port or floppy to probe and
            # drive, all slow under emulation and none part of what is tested.
            "qemu-system-x86_64", "-nodefaults", "-vga", "none",
            "-accel", "tcg", "-machine", "q35", "-m", "1024", "-smp", "1",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"), "-append", append.strip(),
            "-drive", f"file={disk},if=virtio,format=raw",
            "-drive", f"file={iso},media=cdrom,readonly=on",
            "-nic", f"user,restrict=on,model=virtio-net-pci,mac={MAC}",
            "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
            "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            # Entropy: without it the guest waits for its random pool (systemd-random-seed, key generation).
            "-device", "virtio-rng-pci",
            "-serial", f"file:{work / 'console.log'}", "-display", "none", "-monitor", "none", "-no-reboot",
        ]
        start = time.monotonic()
        with open(work / "qemu.err", "w") as err:
            vm = Vm(cmd, err)
        if case.agent_file is not None:
            path, content = case.agent_file
            try:
                while not qga.exists() and vm.running():
                    time.sleep(0.1)
                answered = agent_inject(qga, path, content, start + timeout, vm)
                t["agent_answered_s"] = round(answered - start, 1)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                problems.append(f"agent injection failed: {e}")
        code = vm.wait()
        t["wall_s"] = round(time.monotonic() - start, 1)
        t["qemu_cpu_s"] = vm.cpu_s
        if code in (124, 137, -9, -15):
            problems.append(f"the VM did not power itself off within {timeout} s (killed by timeout)")
        elif code != 0:
            problems.append(f"qemu exited with {code}: {(work / 'qemu.err').read_text()[-500:]}")

        t["raw_disk_copies"] = raw_disk_copies(disk, case.credential)
        # Mounted read-write (it is a scratch copy): after a forced stop ext4 must replay its journal.
        with Mounted(disk, work / "mnt") as root:
            try:
                problems += check_guest(case, root, t)
            except Exception as e:  # noqa: BLE001
                problems.append(f"could not inspect the disk: {e!r}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"harness error: {e!r}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return problems, t, work


def check_guest(case, root, t):
    problems = []
    record = root / RECORD
    runs = parse_record(record.read_text()) if record.is_file() else []
    want_sha = sha256(case.credential)

    by_program = {}
    for r in runs:
        by_program.setdefault(r.get("program"), []).append(r)
    for r in runs:
        if r.get("result") != "ok":
            problems.append(f"runner stand-in {r.get('program')}: {r.get('result')}")
    run_sh = by_program.get("run.sh", [])
    if len(run_sh) != 1:
        problems.append(f"run.sh ran {len(run_sh)} times (want exactly once)")
    if case.kind == "jit":
        if by_program.get("config.sh"):
            problems.append("config.sh ran in a JIT boot")
        for r in run_sh:
            if r.get("mode") != "jit" or r.get("jit_sha256") != want_sha:
                problems.append(f"run.sh did not get the JIT config that was handed over (mode {r.get('mode')})")
            if r.get("jit_from") != "environment":
                problems.append(f"the JIT config reached run.sh through {r.get('jit_from')}, not the environment")
    else:
        cfg = by_program.get("config.sh", [])
        if len(cfg) != 1:
            problems.append(f"config.sh ran {len(cfg)} times (want exactly once)")
        for r in cfg:
            if r.get("mode") != "registration-token" or r.get("token_sha256") != want_sha:
                problems.append("config.sh did not get the registration token that was handed over")
        for r in run_sh:
            if r.get("mode") != "registered":
                problems.append(f"run.sh after registration ran in mode {r.get('mode')}")
    for r in runs:
        uid = r.get("uid")
        if uid == "0":
            problems.append(f"{r.get('program')} ran as root")
        for key in ("jit_in_process_cmdlines", "token_in_process_cmdlines"):
            if r.get(key, "0") != "0":
                problems.append(f"{r.get('program')}: the credential was in {r[key]} other process command lines")
        for key in ("jit_copies_at_job_time", "token_copies_at_job_time"):
            if key in r and r[key].strip():
                problems.append(f"{r.get('program')}: at job time these files held the credential: {r[key].strip()}")
    if runs:
        t["job_started_uptime_s"] = float(runs[0].get("uptime", "nan"))
        t["facts"] = {
            k: v for r in runs for k, v in r.items()
            if k.endswith(("_on_sr0", "_sr0_readable_without_sudo")) or k.startswith(("eject", "readable_after", "tray"))
        }

    pats = patterns(case.credential)
    hits = scan_tree(root, pats, skip={"/" + RECORD})
    jhits, jnote = scan_journal(root, pats)
    hits += jhits
    if jnote:
        t["journal"] = jnote
    if hits:
        problems.append("after power-off these files on the disk hold the credential: " + "; ".join(hits))

    finished, errors = cloud_init_errors(root)
    t["cloud_init_finished"] = finished
    problems += [f"cloud-init: {e}" for e in errors]
    return problems


def raw_disk_copies(disk, credential):
    """Informational: the credential's bytes anywhere on the raw disk (deleted files' blocks included)."""
    needle = credential.encode()
    count = 0
    with open(disk, "rb") as f:
        fd, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:  # only the allocated extents of the sparse copy
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            prev = b""
            while start < stop:
                chunk = f.read(min(1 << 24, stop - start))
                if not chunk:
                    break
                data = prev + chunk
                count += data.count(needle)
                prev = data[-(len(needle) - 1) :]
                start += len(chunk)
            pos = stop
    return count


# --- main -------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, type=Path, help="directory with root.raw, vmlinuz, initrd.img")
    ap.add_argument("--inputs", required=True, type=Path, help="guest-userdata output directory")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per boot")
    ap.add_argument("--cases", default="jit-snippet,v0-snippet,jit-agent,bad-owner")
    ap.add_argument("--keep", action="store_true", help="keep each boot's disk, drive and console log")
    args = ap.parse_args()

    inp = args.inputs
    jit = (inp / "jit.secret").read_text().strip()
    token = (inp / "token.secret").read_text().strip()
    cases = {
        "jit-snippet": Case("jit-snippet", (inp / "jit-snippet.user-data").read_text(), jit, "jit"),
        "v0-snippet": Case(
            "v0-snippet", (inp / "v0-snippet.user-data").read_text(), token, "token",
            cmdline="runner_standin.probe_eject=1",
        ),
        "jit-agent": Case(
            "jit-agent", proxmox_generated_user_data("gh-runner-guest-agent"), jit, "jit",
            agent_file=((inp / "jit-agent.path").read_text(), (inp / "jit-agent.content").read_text()),
        ),
        "bad-owner": Case("bad-owner", (inp / "bad-owner.user-data").read_text(), jit, "jit"),
    }
    selected = [cases[n] for n in args.cases.split(",") if n]
    args.work.mkdir(parents=True, exist_ok=True)

    passed = failed = 0
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(boot, c, args.image, args.work, args.timeout, args.keep): c for c in selected}
        for fut in concurrent.futures.as_completed(futures):
            case = futures[fut]
            problems, t, work = fut.result()
            timing = " ".join(f"{k}={v}" for k, v in t.items() if k not in ("facts",))
            if case.name == "bad-owner":
                # The negative boot: the checks must fail, and cloud-init's own error must be among the reasons.
                ci = [p for p in problems if p.startswith("cloud-init:") and "nosuchuser" in p]
                if ci:
                    passed += 1
                    say(f"PASS {case.name}: the checks failed as they must, with cloud-init's error: {ci[0]} [{timing}]")
                else:
                    failed += 1
                    say(f"FAIL {case.name}: the deliberate error was not reported by cloud-init [{timing}]")
                    for p in problems:
                        say(f"     - {p}")
                continue
            if problems:
                failed += 1
                say(f"FAIL {case.name} [{timing}]")
                for p in problems:
                    say(f"     - {p}")
            else:
                passed += 1
                say(f"PASS {case.name} [{timing}]")
            if t.get("facts"):
                say(f"     guest facts: {t['facts']}")
            if args.keep:
                say(f"     kept: {work}")
    say(f"guest boots took {round(time.monotonic() - started)} s with {args.jobs} in parallel")
    say(f"guest-boot: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
