#!/usr/bin/env python3
"""The differential corpus: Ignition configs that keel must judge and apply as Ignition 2.14 does.

Writes NAME.ign files and manifest.json next to this script. Every config is built from fixed
tables plus a seeded random generator, so two runs write byte-identical files.

The verdict in the manifest ("expected") is never ours: the script asks Debian's
`ignition-validate` (Ignition 2.14) about every file and records its answer. Each case also says
what its author meant ("intent"); when Ignition disagrees, the script stops and names the case,
so a surprise is either moved to the side Ignition puts it on or kept with a written reason
(SURPRISES below).

Ignition 2.14 knows spec 3.4.0 only as "3.4.0-experimental": the files carry that version, and
the test hands keel the same document with the final "3.4.0".

manifest.json lists one config a line: name, version (as declared; "none" when absent),
expected ("valid"/"invalid", ignition-validate's exit status), tree_comparable (valid, and touches
only files, directories, links, units, users and groups: the test applies it with Ignition's files
stage and with keel and compares the trees), ignition_error (Ignition's first error, if any).
Names say what a config exercises; "-apply-fails" marks a valid config Ignition fails to apply.

Usage: generate.py [--check]   (--check: fail if the files on disk differ from a fresh run)
"""

import base64
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import urllib.parse
import zlib

SEED = 20261130
HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0-experimental"]
# Cases Ignition judges against their author's intent, kept on purpose: name -> why.
SURPRISES = {}

rng = random.Random(SEED)
cases = []  # (name, version, document text, intent, tree_comparable)


def short(version):
    major, minor = version.split(".")[:2]
    return f"v{major}_{minor}"


def versions_from(first):
    return VERSIONS[VERSIONS.index(first):]


def add(name, version, body, intent, tree=True, raw=None):
    """One config. `body` is merged under a top-level ignition.version; `raw` replaces the text."""
    full = f"{name}-{short(version)}"
    if raw is None:
        document = {"ignition": {"version": version}}
        for key, value in body.items():
            if key == "ignition":
                document["ignition"].update(value)
            else:
                document[key] = value
        raw = json.dumps(document, indent=2, sort_keys=True) + "\n"
    cases.append((full, version, raw, intent, tree))


def one_version(name, first="3.0.0", before_3_4=False):
    """Spread single-version cases over the versions that know their features, by a fixed hash
    of the case's name, so adding a case moves no other case to another version."""
    choices = [v for v in versions_from(first) if not (before_3_4 and v.startswith("3.4"))]
    return choices[zlib.crc32(name.encode()) % len(choices)]


def each(first="3.0.0"):
    return versions_from(first)


def data_plain(text):
    return "data:," + urllib.parse.quote(text, safe="")


def data_base64(raw):
    return "data:;base64," + base64.b64encode(raw).decode()


def sha512(raw):
    return "sha512-" + hashlib.sha512(raw).hexdigest()


def sha256(raw):
    return "sha256-" + hashlib.sha256(raw).hexdigest()


def gzipped(raw):
    return gzip.compress(raw, compresslevel=9, mtime=0)


def random_text(lines):
    words = ["keel", "ignition", "flatcar", "boot", "root", "usr", "verity", "initrd", "unit", "file"]
    return "".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + "\n" for _ in range(lines))


def files(*entries):
    return {"storage": {"files": list(entries)}}


def storage(**sections):
    return {"storage": sections}


UNIT_WITH_INSTALL = "[Unit]\nDescription=keel differential\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
UNIT_NO_INSTALL = "[Unit]\nDescription=no install section\n\n[Service]\nExecStart=/bin/true\n"
TEMPLATE_UNIT = "[Unit]\nDescription=instance %i\n\n[Service]\nExecStart=/bin/echo %i\n\n[Install]\nWantedBy=multi-user.target\n"
DROPIN = "[Service]\nEnvironment=KEEL=1\n"
SSH_KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJkZWxpYmVyYXRlbHkgbm90IGEgcmVhbCBrZXkgMDAx alice@example",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDdeliberatelynotarealkey002 alice@laptop",
]
# "keel" hashed with SHA-512 crypt; never a real account's password.
PASSWORD_HASH = "$6$keelsalt$5bUuUvNpMmwm4T.mWSmMR0TtA6U3N7y4y8E2GmnsWmqXZdS8X1z8bXxN5kH3ZkJ9p3W8Qm0yQm2tZ.ZQd6Dz1"


def valid_files():
    text = random_text(3).encode()
    for version in each():
        add("file-data-plain", version, files({"path": "/etc/keel/plain", "contents": {"source": data_plain("hello, keel!\n")}}), "valid")
        add("file-data-base64", version, files({"path": "/etc/keel/b64", "mode": 0o600, "contents": {"source": data_base64(text)}}), "valid")
        add("file-data-percent", version, files({"path": "/etc/keel/pct", "contents": {"source": "data:text/plain;charset=utf-8,a%20b%0Ac%25d%0A"}}), "valid")
        add("file-gzip", version, files({"path": "/opt/keel/gz", "contents": {"source": data_base64(gzipped(text)), "compression": "gzip"}}), "valid")
        add("file-verified-sha512", version, files({"path": "/etc/keel/v512", "contents": {"source": data_base64(text), "verification": {"hash": sha512(text)}}}), "valid")
        add("file-empty-no-contents", version, files({"path": "/var/lib/keel/empty"}), "valid")
        add("file-mode-0755", version, files({"path": "/usr/local/bin/tool", "mode": 0o755, "contents": {"source": data_plain("#!/bin/sh\necho hi\n")}}), "valid")
        add("file-owner-by-id", version, files({"path": "/srv/owned", "user": {"id": 1}, "group": {"id": 2}, "contents": {"source": data_plain("x")}}), "valid")
        add("file-owner-by-name", version, files({"path": "/srv/named", "user": {"name": "daemon"}, "group": {"name": "bin"}, "contents": {"source": data_plain("y")}}), "valid")
        add("file-append-only", version, files({"path": "/etc/keel/appended", "append": [{"source": data_plain("one\n")}, {"source": data_plain("two\n")}]}), "valid")
        add("file-contents-and-append", version,
            files({"path": "/etc/keel/both", "contents": {"source": data_plain("head\n")}, "append": [{"source": data_base64(b"tail\n")}]}), "valid")
        add("file-append-to-existing", version, files({"path": "/etc/motd", "append": [{"source": data_plain("appended by keel\n")}]}), "valid")
        add("file-overwrite-existing", version, files({"path": "/etc/motd", "overwrite": True, "contents": {"source": data_plain("replaced\n")}}), "valid")
        add("file-deep-new-parents", version, files({"path": "/a/b/c/d/e/f", "contents": {"source": data_plain("deep")}}), "valid")
        add("file-default-mode-warning", version, files({"path": "/etc/keel/nomode", "contents": {"source": data_plain("m")}}), "valid")
    for version in each("3.1.0"):
        add("file-verified-sha256", version, files({"path": "/etc/keel/v256", "contents": {"source": data_base64(text), "verification": {"hash": sha256(text)}}}), "valid")
        add("file-gzip-verified-sha512", version,
            files({"path": "/etc/keel/gzv", "contents": {"source": data_base64(gzipped(text)), "compression": "gzip", "verification": {"hash": sha512(text)}}}), "valid")
        add("file-append-verified-sha256", version,
            files({"path": "/etc/keel/appv", "append": [{"source": data_plain("part\n"), "verification": {"hash": sha256(b"part\n")}}]}), "valid")
    # Special bits are a warning before 3.4 in 2.14: the configs are valid everywhere.
    for mode, label in [(0o4755, "setuid"), (0o2755, "setgid"), (0o1777, "sticky"), (0o6711, "setuid-setgid")]:
        for version in [one_version(f"file-mode-{label}", before_3_4=True), "3.4.0-experimental"]:
            add(f"file-mode-{label}", version, files({"path": f"/usr/local/bin/{label}", "mode": mode, "contents": {"source": data_plain("s")}}), "valid")
    for mode in [0, 0o400, 0o644, 0o777]:
        add(f"file-mode-{mode:04o}", one_version(f"file-mode-{mode:04o}"), files({"path": f"/etc/keel/mode{mode:o}", "mode": mode, "contents": {"source": data_plain("m")}}), "valid")
    # A wrong hash is only found when the contents are fetched: valid config, failed apply.
    add("file-apply-fails-hash-mismatch", one_version("file-apply-fails-hash-mismatch"),
        files({"path": "/etc/keel/bad", "contents": {"source": data_plain("abc"), "verification": {"hash": sha512(b"abd")}}}), "valid")
    add("file-apply-fails-existing-no-overwrite", one_version("file-apply-fails-existing-no-overwrite"), files({"path": "/etc/motd", "contents": {"source": data_plain("new")}}), "valid")
    add("file-gzip-hash-of-compressed-apply-fails", one_version("file-gzip-hash-of-compressed-apply-fails", "3.1.0"),
        files({"path": "/etc/keel/gzbad", "contents": {"source": data_base64(gzipped(text)), "compression": "gzip", "verification": {"hash": sha256(gzipped(text))}}}), "valid")
    for index in range(6):
        entries = []
        for number in range(rng.randint(2, 5)):
            raw = random_text(rng.randint(1, 4)).encode()
            entry = {"path": f"/var/lib/random{index}/f{number}", "mode": rng.choice([0o600, 0o640, 0o644, 0o755]), "contents": {"source": data_base64(raw)}}
            if rng.random() < 0.5:
                entry["contents"]["verification"] = {"hash": sha512(raw)}
            if rng.random() < 0.3:
                entry["append"] = [{"source": data_plain(random_text(1))}]
            entries.append(entry)
        add(f"files-random-{index}", one_version(f"files-random-{index}"), files(*entries), "valid")


def valid_nodes():
    for version in each():
        add("directory-plain", version, storage(directories=[{"path": "/srv/keel"}]), "valid")
        add("directory-mode-owner", version, storage(directories=[{"path": "/srv/private", "mode": 0o700, "user": {"id": 1}, "group": {"name": "daemon"}}]), "valid")
        add("directory-nested-with-file", version,
            storage(directories=[{"path": "/data/a", "mode": 0o750}, {"path": "/data/a/b", "mode": 0o711}], files=[{"path": "/data/a/b/f", "contents": {"source": data_plain("f")}}]), "valid")
        add("link-soft-absolute", version, storage(links=[{"path": "/etc/keel/current", "target": "/usr/share/keel"}]), "valid")
        add("link-soft-relative", version, storage(links=[{"path": "/usr/local/bin/k", "target": "../lib/keel/k"}]), "valid")
        add("link-hard-to-config-file", version,
            storage(files=[{"path": "/srv/orig", "mode": 0o640, "contents": {"source": data_plain("shared")}}], links=[{"path": "/srv/hard", "target": "/srv/orig", "hard": True}]), "valid")
        add("link-hard-to-base-file", version, storage(links=[{"path": "/root/motd-hard", "target": "/etc/motd", "hard": True}]), "valid")
        add("link-soft-owner", version, storage(links=[{"path": "/srv/owned-link", "target": "/nowhere", "user": {"id": 2}, "group": {"id": 2}}]), "valid")
    add("directory-sticky", one_version("directory-sticky"), storage(directories=[{"path": "/srv/shared-tmp", "mode": 0o1777}]), "valid")
    add("directory-setgid", "3.4.0-experimental", storage(directories=[{"path": "/srv/team", "mode": 0o2775, "group": {"id": 100}}]), "valid")
    add("directory-overwrite-existing", one_version("directory-overwrite-existing"), storage(directories=[{"path": "/home", "overwrite": True, "mode": 0o700}]), "valid")
    # Overwriting a directory removes what was in it: /etc/skel goes, so the new user's home stays empty.
    add("directory-overwrite-nonempty-skel", one_version("directory-overwrite-nonempty-skel"), {"storage": {"directories": [{"path": "/etc/skel", "overwrite": True}]}, "passwd": {"users": [{"name": "noskel"}]}}, "valid")
    add("link-overwrite-existing-file", one_version("link-overwrite-existing-file"), storage(links=[{"path": "/etc/motd", "target": "/dev/null", "overwrite": True}]), "valid")
    add("link-into-link-parent-hard-ok", one_version("link-into-link-parent-hard-ok"),
        storage(files=[{"path": "/srv/base", "contents": {"source": data_plain("b")}}], links=[{"path": "/srv/h", "target": "/srv/base", "hard": True}],
                directories=[{"path": "/srv/h2"}]), "valid")
    add("nodes-ordering-by-depth", one_version("nodes-ordering-by-depth"),
        storage(links=[{"path": "/z/link", "target": "/z/dir/file"}], directories=[{"path": "/z/dir/sub"}, {"path": "/z/dir"}],
                files=[{"path": "/z/dir/file", "contents": {"source": data_plain("z")}}, {"path": "/z/dir/sub/deeper", "contents": {"source": data_plain("d")}}]), "valid")
    add("link-hard-with-owner-warning", one_version("link-hard-with-owner-warning"),
        storage(files=[{"path": "/srv/o", "contents": {"source": data_plain("o")}}], links=[{"path": "/srv/oh", "target": "/srv/o", "hard": True, "user": {"id": 1}}]), "valid")


def valid_units():
    for version in each():
        add("unit-contents-enabled", version, {"systemd": {"units": [{"name": "keel-a.service", "enabled": True, "contents": UNIT_WITH_INSTALL}]}}, "valid")
        add("unit-contents-disabled", version, {"systemd": {"units": [{"name": "keel-b.service", "enabled": False, "contents": UNIT_WITH_INSTALL}]}}, "valid")
        add("unit-mask", version, {"systemd": {"units": [{"name": "systemd-timesyncd.service", "mask": True}]}}, "valid")
        add("unit-dropins-only", version, {"systemd": {"units": [{"name": "sshd.service", "dropins": [{"name": "10-keel.conf", "contents": DROPIN}, {"name": "20-more.conf", "contents": "[Unit]\nAfter=network.target\n"}]}]}}, "valid")
        add("unit-template-instances", version, {"systemd": {"units": [
            {"name": "getty-keel@.service", "contents": TEMPLATE_UNIT},
            {"name": "getty-keel@tty1.service", "enabled": True},
            {"name": "getty-keel@ttyS0.service", "enabled": True},
            {"name": "getty-keel@tty2.service", "enabled": False}]}}, "valid")
    add("unit-enabled-no-install-warning", one_version("unit-enabled-no-install-warning"), {"systemd": {"units": [{"name": "noinstall.service", "enabled": True, "contents": UNIT_NO_INSTALL}]}}, "valid")
    add("unit-timer-socket-path-target", one_version("unit-timer-socket-path-target"), {"systemd": {"units": [
        {"name": "keel.timer", "enabled": True, "contents": "[Timer]\nOnBootSec=5min\n\n[Install]\nWantedBy=timers.target\n"},
        {"name": "keel.socket", "contents": "[Socket]\nListenStream=/run/keel.sock\n"},
        {"name": "keel.path", "contents": "[Path]\nPathExists=/run/keel\n"},
        {"name": "keel.target", "contents": "[Unit]\nDescription=keel\n"},
        {"name": "keel.mount", "contents": "[Mount]\nWhat=tmpfs\nWhere=/keel\n"}]}}, "valid")
    add("unit-contents-dropin-mask-mix", one_version("unit-contents-dropin-mask-mix"), {"systemd": {"units": [
        {"name": "mixed.service", "enabled": True, "contents": UNIT_WITH_INSTALL, "dropins": [{"name": "override.conf", "contents": DROPIN}]},
        {"name": "masked.service", "mask": True, "contents": UNIT_WITH_INSTALL}]}}, "valid")
    add("unit-dropin-empty-contents", one_version("unit-dropin-empty-contents"), {"systemd": {"units": [{"name": "empty.service", "dropins": [{"name": "empty.conf"}]}]}}, "valid")
    add("unit-mask-false-enabled", one_version("unit-mask-false-enabled"), {"systemd": {"units": [{"name": "unmasked.service", "mask": False, "enabled": True, "contents": UNIT_WITH_INSTALL}]}}, "valid")
    add("unit-template-instance-no-template-contents", one_version("unit-template-instance-no-template-contents"), {"systemd": {"units": [{"name": "serial-getty@ttyS1.service", "enabled": True}]}}, "valid")
    add("unit-comment-continuation", one_version("unit-comment-continuation"), {"systemd": {"units": [{"name": "cont.service", "contents":
        "# comment\n; other comment\n[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\n"}]}}, "valid")


def valid_passwd():
    for version in each():
        add("user-minimal", version, {"passwd": {"users": [{"name": "alice"}]}}, "valid")
        add("user-ssh-keys", version, {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": SSH_KEYS}]}}, "valid")
        add("user-all-fields", version, {"passwd": {"groups": [{"name": "ops"}, {"name": "dev", "gid": 2500}],
            "users": [{"name": "bob", "passwordHash": PASSWORD_HASH, "sshAuthorizedKeys": SSH_KEYS[:1], "uid": 2000, "gecos": "Bob Builder",
                       "homeDir": "/home/builder", "primaryGroup": "ops", "groups": ["dev", "sudo"], "noLogInit": True, "shell": "/bin/sh"}]}}, "valid")
        add("user-system", version, {"passwd": {"users": [{"name": "svc", "system": True}]}}, "valid")
        add("user-no-create-home", version, {"passwd": {"users": [{"name": "nohome", "noCreateHome": True}]}}, "valid")
        add("user-no-user-group", version, {"passwd": {"users": [{"name": "shared", "noUserGroup": True}]}}, "valid")
        add("group-with-gid", version, {"passwd": {"groups": [{"name": "keel", "gid": 4242}]}}, "valid")
        add("group-system-password", version, {"passwd": {"groups": [{"name": "sysgrp", "system": True, "passwordHash": PASSWORD_HASH}]}}, "valid")
        add("user-modify-existing", version, {"passwd": {"users": [{"name": "daemon", "shell": "/bin/sh", "gecos": "changed", "uid": 1}]}}, "valid")
        add("file-owned-by-created-user", version, {"passwd": {"users": [{"name": "carol", "uid": 3000}], "groups": [{"name": "carolg", "gid": 3001}]},
            "storage": {"files": [{"path": "/home/carol/.profile-keel", "user": {"name": "carol"}, "group": {"name": "carolg"}, "contents": {"source": data_plain("export K=1\n")}}],
                        "directories": [{"path": "/srv/carol", "user": {"name": "carol"}, "group": {"name": "carol"}}]}}, "valid")
    for version in each("3.2.0"):
        # "former" is the base root's one regular user (uid 500, its own home): userdel --remove takes it all.
        add("user-should-not-exist", version, {"passwd": {"users": [{"name": "former", "shouldExist": False}]}}, "valid")
        add("group-should-not-exist", version, {"passwd": {"groups": [{"name": "floppy", "shouldExist": False}]}}, "valid")
        add("user-should-not-exist-absent", version, {"passwd": {"users": [{"name": "ghost", "shouldExist": False}]}}, "valid")
    add("user-uid-and-group-collide", one_version("user-uid-and-group-collide"), {"passwd": {"groups": [{"name": "taken", "gid": 1000}], "users": [{"name": "dave"}]}}, "valid")
    add("users-several-in-order", one_version("users-several-in-order"), {"passwd": {"users": [{"name": "u1"}, {"name": "u2", "uid": 1500}, {"name": "u3"}, {"name": "u4", "system": True}]}}, "valid")
    add("user-system-with-home", one_version("user-system-with-home"), {"passwd": {"users": [{"name": "sysh", "system": True, "homeDir": "/var/lib/sysh"}]}}, "valid")
    add("user-password-hash-empty", one_version("user-password-hash-empty"), {"passwd": {"users": [{"name": "empty", "passwordHash": ""}]}}, "valid")
    add("user-primary-group-by-gid-name", one_version("user-primary-group-by-gid-name"), {"passwd": {"users": [{"name": "erin", "primaryGroup": "users"}]}}, "valid")
    add("user-existing-password-only", one_version("user-existing-password-only"), {"passwd": {"users": [{"name": "root", "passwordHash": PASSWORD_HASH}]}}, "valid")
    add("user-existing-ssh-to-root", one_version("user-existing-ssh-to-root"), {"passwd": {"users": [{"name": "root", "sshAuthorizedKeys": SSH_KEYS}]}}, "valid")
    add("unit-key-before-section", one_version("unit-key-before-section"), {"systemd": {"units": [{"name": "nosection.service", "contents": "ExecStart=/bin/true\n"}]}}, "valid")
    add("unit-bare-template-name-enabled", one_version("unit-bare-template-name-enabled"), {"systemd": {"units": [{"name": "@.service", "enabled": True}]}}, "valid")
    # shouldExist false beside other fields is only refused for partitions; the user and group are deleted.
    add("user-should-not-exist-with-uid", one_version("user-should-not-exist-with-uid", "3.2.0"), {"passwd": {"users": [{"name": "former", "shouldExist": False, "uid": 500}]}}, "valid")
    # userdel --remove refuses a home its user does not own (Debian's /usr/games is root's): exit 12, Ignition fails.
    add("user-should-not-exist-root-owned-home-apply-fails", one_version("user-should-not-exist-root-owned-home-apply-fails", "3.2.0"),
        {"passwd": {"users": [{"name": "games", "shouldExist": False}]}}, "valid")
    add("user-modify-existing-regular", one_version("user-modify-existing-regular"),
        {"passwd": {"users": [{"name": "former", "groups": ["users"], "sshAuthorizedKeys": SSH_KEYS, "passwordHash": PASSWORD_HASH}]}}, "valid")
    add("group-should-not-exist-with-gid", one_version("group-should-not-exist-with-gid", "3.2.0"), {"passwd": {"groups": [{"name": "floppy", "shouldExist": False, "gid": 25}]}}, "valid")
    # usermod --move-home renames the old home; a parent the new one lacks makes it fail.
    add("user-existing-home-moved", one_version("user-existing-home-moved"), {"passwd": {"users": [{"name": "daemon", "homeDir": "/var/daemon"}]}}, "valid")
    add("user-existing-home-moved-parent-missing-apply-fails", one_version("user-existing-home-moved-parent-missing-apply-fails"),
        {"passwd": {"users": [{"name": "root", "homeDir": "/srv/new/roothome"}]}}, "valid")
    # Ignition writes SSH keys as the user: daemon cannot create /usr/sbin/.ssh, so the apply fails.
    add("user-existing-ssh-keys-unwritable-home-apply-fails", one_version("user-existing-ssh-keys-unwritable-home-apply-fails"), {"passwd": {"users": [{"name": "daemon", "sshAuthorizedKeys": SSH_KEYS[1:]}]}}, "valid")
    add("user-apply-fails-unknown-group", one_version("user-apply-fails-unknown-group"), {"passwd": {"users": [{"name": "frank", "groups": ["no-such-group"]}]}}, "valid")


def valid_mixes():
    for index in range(8):
        version = one_version(f"mix-random-{index}")
        users = [{"name": f"mix{index}u{n}", "sshAuthorizedKeys": [rng.choice(SSH_KEYS)]} for n in range(rng.randint(1, 3))]
        owner = users[0]["name"]
        body = {
            "passwd": {"users": users, "groups": [{"name": f"mix{index}g"}]},
            "storage": {
                "directories": [{"path": f"/srv/mix{index}", "mode": rng.choice([0o700, 0o755]), "user": {"name": owner}}],
                "files": [{"path": f"/srv/mix{index}/conf", "mode": 0o640, "user": {"name": owner}, "group": {"name": f"mix{index}g"},
                           "contents": {"source": data_base64(random_text(2).encode())}}],
                "links": [{"path": f"/srv/mix{index}/latest", "target": "conf"}],
            },
            "systemd": {"units": [{"name": f"mix{index}.service", "enabled": rng.random() < 0.7, "contents": UNIT_WITH_INSTALL}]},
        }
        add(f"mix-random-{index}", version, body, "valid")
    add("mix-flatcar-like", "3.3.0", {
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": SSH_KEYS, "groups": ["sudo", "docker"]}], "groups": [{"name": "docker", "system": True}]},
        "storage": {"files": [{"path": "/etc/hostname", "mode": 0o644, "overwrite": True, "contents": {"source": data_plain("keel-node\n")}},
                              {"path": "/etc/systemd/network/10-eth.network", "contents": {"source": data_plain("[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")}}]},
        "systemd": {"units": [{"name": "docker.socket", "enabled": True, "contents": "[Socket]\nListenStream=/run/docker.sock\n\n[Install]\nWantedBy=sockets.target\n"},
                              {"name": "update-engine.service", "mask": True}]}}, "valid")


def valid_not_tree():
    """Valid configs that touch disks, kernel arguments or the config chain: validated only."""
    ext4 = {"device": "/dev/disk/by-label/ROOT", "format": "ext4", "label": "ROOT", "wipeFilesystem": True}
    for version in each():
        add("filesystem-ext4-root", version, storage(filesystems=[ext4]), "valid", tree=False)
        add("disk-partitions", version, storage(disks=[{"device": "/dev/vdb", "wipeTable": True, "partitions": [
            {"number": 1, "label": "DATA", "sizeMiB": 512, "typeGuid": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"},
            {"label": "LOG", "sizeMiB": 0}]}]), "valid", tree=False)
        add("raid1-with-spare", version, storage(raid=[{"name": "md0", "level": "raid1", "devices": ["/dev/vdb", "/dev/vdc", "/dev/vdd"], "spares": 1}]), "valid", tree=False)
        add("config-merge-data-url", version, {"ignition": {"config": {"merge": [{"source": data_plain('{"ignition":{"version":"' + version + '"}}')}]}}}, "valid", tree=False)
    for fmt, label in [("xfs", "x" * 12), ("swap", "s" * 15), ("vfat", "V" * 11), ("btrfs", "b" * 256), ("ext4", "e" * 16)]:
        add(f"filesystem-{fmt}-label-at-limit", one_version(f"filesystem-{fmt}-label-at-limit"), storage(filesystems=[{"device": "/dev/vdb", "format": fmt, "label": label}]), "valid", tree=False)
    add("filesystem-mount-options", one_version("filesystem-mount-options", "3.1.0"), storage(filesystems=[{"device": "/dev/vdb", "format": "xfs", "path": "/var", "mountOptions": ["noatime"], "options": ["-m", "crc=1"]}]), "valid", tree=False)
    add("proxy-http-https", one_version("proxy-http-https", "3.1.0"), {"ignition": {"proxy": {"httpProxy": "http://proxy:3128", "httpsProxy": "https://proxy:3129", "noProxy": ["example.com"]}}}, "valid", tree=False)
    # A plain-HTTP proxy for HTTPS is only a warning; a header without a value is allowed.
    add("proxy-https-via-http-warning", one_version("proxy-https-via-http-warning", "3.1.0"), {"ignition": {"proxy": {"httpsProxy": "http://proxy:3128"}}}, "valid", tree=False)
    add("header-value-missing", one_version("header-value-missing", "3.1.0"),
        files({"path": "/h", "contents": {"source": "https://e/x", "httpHeaders": [{"name": "A"}]}}), "valid", tree=False)
    add("timeouts-set", one_version("timeouts-set"), {"ignition": {"timeouts": {"httpResponseHeaders": 10, "httpTotal": 60}}}, "valid", tree=False)
    add("tls-ca-data", one_version("tls-ca-data"), {"ignition": {"security": {"tls": {"certificateAuthorities": [{"source": data_plain("-----BEGIN CERTIFICATE-----\n")}]}}}}, "valid", tree=False)
    add("luks-with-tang", one_version("luks-with-tang", "3.2.0"), storage(luks=[{"name": "data", "device": "/dev/vdb", "clevis": {"tang": [{"url": "http://tang", "thumbprint": "abc"}]}}]), "valid", tree=False)
    add("kargs-add-remove", one_version("kargs-add-remove", "3.3.0"), {"kernelArguments": {"shouldExist": ["quiet"], "shouldNotExist": ["debug"]}}, "valid", tree=False)
    add("http-source-with-headers", one_version("http-source-with-headers", "3.1.0"), files({"path": "/x", "contents": {"source": "https://example.com/x", "httpHeaders": [{"name": "A", "value": "b"}]}}), "valid", tree=False)
    add("s3-tftp-sources", one_version("s3-tftp-sources"), files({"path": "/s3", "contents": {"source": "s3://bucket/key"}}, {"path": "/tftp", "contents": {"source": "tftp://host/file"}}),
        "valid", tree=False)
    add("gs-source", one_version("gs-source", "3.2.0"), files({"path": "/gs", "contents": {"source": "gs://bucket/obj"}}), "valid", tree=False)
    add("s3-arn-sources", "3.4.0-experimental", files({"path": "/a", "contents": {"source": "arn:aws:s3:::bucket/key"}},
                                                      {"path": "/b", "contents": {"source": "arn:aws:s3:us-west-2:123456789012:accesspoint/ap/object/key?versionId=v1"}}),
        "valid", tree=False)
    # A merge entry without a source: accepted by 3.0, refused from 3.1 on (resource.go's ErrSourceRequired).
    for version in each():
        add("config-merge-source-missing", version, {"ignition": {"config": {"merge": [{}]}}}, "valid" if version == "3.0.0" else "invalid", tree=False)
    add("luks-uuid-unchecked", one_version("luks-uuid-unchecked", "3.2.0"), storage(luks=[{"name": "c", "device": "/dev/vdb", "uuid": "not-a-uuid"}]), "valid", tree=False)
    add("partition-should-not-exist-beside-size-zero", one_version("partition-should-not-exist-beside-size-zero", "3.2.0"),
        storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "shouldExist": False}, {"number": 2, "sizeMiB": 0}]}]), "valid", tree=False)
    # Validation leaves these to the disks stage.
    add("partition-start-negative-unchecked", one_version("partition-start-negative-unchecked"),
        storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "startMiB": -1}]}]), "valid", tree=False)
    add("partition-size-negative-unchecked", one_version("partition-size-negative-unchecked"),
        storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "sizeMiB": -5}]}]), "valid", tree=False)
    add("filesystem-uuid-unchecked", one_version("filesystem-uuid-unchecked"),
        storage(filesystems=[{"device": "/dev/vdb", "format": "ext4", "uuid": "not-a-uuid"}]), "valid", tree=False)
    add("timeouts-negative-unchecked", one_version("timeouts-negative-unchecked"), {"ignition": {"timeouts": {"httpTotal": -1}}}, "valid", tree=False)
    add("unused-key-warning", one_version("unused-key-warning"), {"storage": {"files": [{"path": "/x", "bogus": 1}]}}, "valid", tree=False)


def newer_ignition_differs():
    """Configs 2.14 judges one way and the newest Ignition (all spec versions) the other way."""
    for version in each():
        # Newest Ignition refuses a node where a unit's contents go (ErrPathConflictsSystemd, commit 2f63faa1); 2.14 writes both.
        add("unit-path-also-a-storage-file", version, {"storage": {"files": [{"path": "/etc/systemd/system/twice.service", "contents": {"source": data_plain("[Unit]\n")}}]},
                                                     "systemd": {"units": [{"name": "twice.service", "contents": UNIT_WITH_INSTALL}]}}, "valid")
        # 2.14 refuses deleting a partition beside one without a number (ErrZeroesWithShouldNotExist); newest allows it (commit 76f869a4).
        add("partition-should-not-exist-beside-unnumbered", version, storage(disks=[{"device": "/dev/vdb", "partitions": [
            {"number": 1, "shouldExist": False}, {"label": "NEW", "sizeMiB": 100}]}]), "invalid", tree=False)
    # 2.14's 3.4.0-experimental has no tang advertisement (an unused key, a warning); final 3.4.0 checks that it is JSON.
    add("luks-tang-advertisement-not-json", "3.4.0-experimental", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"tang": [
        {"url": "http://tang", "thumbprint": "t", "advertisement": "{not json"}]}}]), "valid", tree=False)


def invalid():
    inv = lambda name, body, first="3.0.0": add(name, one_version(name, first), body, "invalid", tree=False)  # noqa: E731
    # Document-level.
    # Documents whose version is not one of VERSIONS: the manifest records what they declare ("none" when nothing).
    for name, version, raw in [("syntax-error", "3.3.0", '{"ignition": {"version": "3.3.0"},}'), ("empty-document", "none", ""), ("not-an-object", "none", "[]"),
                               ("version-missing", "none", '{"ignition": {}}'), ("version-unknown", "3.9.0", '{"ignition": {"version": "3.9.0"}}'),
                               ("version-garbage", "three", '{"ignition": {"version": "three"}}'), ("version-2x", "2.3.0", '{"ignition": {"version": "2.3.0"}}'),
                               ("wrong-type-mode-string", "3.3.0", '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "mode": "0644"}]}}'),
                               ("wrong-type-users-object", "3.2.0", '{"ignition": {"version": "3.2.0"}, "passwd": {"users": {"name": "a"}}}')]:
        cases.append((f"{name}-raw", version, raw + ("\n" if raw else ""), "invalid", False))
    # The core rules in every version.
    for version in VERSIONS:
        for name, body in [("each-file-path-relative", files({"path": "etc/x"})), ("each-dup-file-paths", files({"path": "/d"}, {"path": "/d"})),
                           ("each-file-mode-too-big", files({"path": "/m", "mode": 0o10000})),
                           ("each-source-scheme-ftp", files({"path": "/s", "contents": {"source": "ftp://h/x"}})),
                           ("each-hash-wrong-size", files({"path": "/h", "contents": {"source": data_plain("h"), "verification": {"hash": "sha512-00"}}})),
                           ("each-unit-no-extension", {"systemd": {"units": [{"name": "foo"}]}})]:
            add(name, version, body, "invalid", tree=False)
    # Paths.
    for kind in ["files", "directories", "links"]:
        extra = {"target": "/t"} if kind == "links" else {}
        inv(f"{kind}-path-missing", storage(**{kind: [dict(extra)]}))
        inv(f"{kind}-path-relative", storage(**{kind: [dict(extra, path="etc/x")]}))
        for dirty, label in [("/a/../b", "dotdot"), ("/a/./b", "dot"), ("/a//b", "double-slash"), ("/a/b/", "trailing-slash")]:
            inv(f"{kind}-path-dirty-{label}", storage(**{kind: [dict(extra, path=dirty)]}))
    inv("filesystem-path-relative", storage(filesystems=[{"device": "/dev/vdb", "format": "ext4", "path": "var"}]))
    # Duplicates.
    inv("dup-files", files({"path": "/d"}, {"path": "/d"}))
    inv("dup-file-and-directory", storage(files=[{"path": "/d"}], directories=[{"path": "/d"}]))
    inv("dup-directory-and-link", storage(directories=[{"path": "/d"}], links=[{"path": "/d", "target": "/t"}]))
    inv("dup-units", {"systemd": {"units": [{"name": "a.service"}, {"name": "a.service", "mask": True}]}})
    inv("dup-dropins", {"systemd": {"units": [{"name": "a.service", "dropins": [{"name": "x.conf"}, {"name": "x.conf"}]}]}})
    inv("dup-users", {"passwd": {"users": [{"name": "a"}, {"name": "a"}]}})
    inv("dup-groups", {"passwd": {"groups": [{"name": "g"}, {"name": "g"}]}})
    inv("dup-disks", storage(disks=[{"device": "/dev/vdb"}, {"device": "/dev/vdb"}]))
    inv("dup-filesystems", storage(filesystems=[{"device": "/dev/vdb", "format": "ext4"}, {"device": "/dev/vdb", "format": "xfs"}]))
    inv("dup-partition-numbers", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1}, {"number": 1}]}]))
    inv("dup-partition-labels", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "label": "A"}, {"number": 2, "label": "A"}]}]))
    inv("dup-raid", storage(raid=[{"name": "md", "level": "raid1", "devices": ["/dev/a", "/dev/b"]}] * 2))
    inv("dup-luks", storage(luks=[{"name": "c", "device": "/dev/vdb"}] * 2), "3.2.0")
    inv("dup-config-merge-entries", {"ignition": {"config": {"merge": [{"source": data_plain("{}")}, {"source": data_plain("{}")}]}}})
    inv("dup-ssh-keys", {"passwd": {"users": [{"name": "a", "sshAuthorizedKeys": [SSH_KEYS[0], SSH_KEYS[0]]}]}})
    inv("dup-user-groups", {"passwd": {"users": [{"name": "a", "groups": ["x", "x"]}]}})
    inv("dup-kargs", {"kernelArguments": {"shouldExist": ["a", "a"]}}, "3.3.0")
    # Modes.
    for mode, label in [(0o10000, "too-big"), (-1, "negative"), (2 ** 31, "huge")]:
        inv(f"file-mode-{label}", files({"path": "/m", "mode": mode}))
        inv(f"directory-mode-{label}", storage(directories=[{"path": "/m", "mode": mode}]))
    # Sources.
    for source, label in [("ftp://example.com/x", "scheme-ftp"), ("file:///etc/passwd", "scheme-file"), ("http://[::1", "unparseable"),
                          ("data:;base64,@@@", "data-bad-base64"), ("data:text/plain", "data-no-comma"), ("s3://bucket/key?versionId=", "s3-empty-version"),
                          ("/relative/no/scheme", "no-scheme"), ("oem:///config", "scheme-oem")]:
        inv(f"source-{label}", files({"path": "/s", "contents": {"source": source}}))
    inv("source-bad-in-append", files({"path": "/s", "append": [{"source": "ftp://x/y"}]}))
    inv("source-bad-in-config-replace", {"ignition": {"config": {"replace": {"source": "gopher://x"}}}})
    inv("source-bad-in-tls-ca", {"ignition": {"security": {"tls": {"certificateAuthorities": [{"source": "ftp://ca"}]}}}})
    inv("tls-ca-source-missing", {"ignition": {"security": {"tls": {"certificateAuthorities": [{}]}}}}, "3.1.0")
    # Hashes.
    for hash_, label in [("sha512-zz", "malformed-hex"), ("sha512-abcd", "wrong-size"), ("md5-d41d8cd98f00b204e9800998ecf8427e", "unrecognized"),
                         ("sha512", "no-dash"), ("-abc", "no-function"), ("SHA512-" + "0" * 128, "uppercase-function")]:
        inv(f"hash-{label}", files({"path": "/h", "contents": {"source": data_plain("h"), "verification": {"hash": hash_}}}))
    inv("hash-sha256-wrong-size", files({"path": "/h", "contents": {"source": data_plain("h"), "verification": {"hash": "sha256-" + "0" * 128}}}), "3.1.0")
    add("hash-sha256-before-3-1", "3.0.0", files({"path": "/h", "contents": {"source": data_plain("h"), "verification": {"hash": sha256(b"h")}}}), "invalid", tree=False)
    inv("hash-bad-on-config-merge", {"ignition": {"config": {"merge": [{"source": data_plain("{}"), "verification": {"hash": "sha512-00"}}]}}})
    # Compression, verification and overwrite without a source.
    for value in ["bzip2", "xz", "GZIP"]:
        inv(f"compression-{value.lower()}-{'upper' if value.isupper() else 'unknown'}", files({"path": "/c", "contents": {"source": data_plain("c"), "compression": value}}))
    inv("verification-without-source", files({"path": "/v", "contents": {"verification": {"hash": sha512(b"")}}}))
    inv("overwrite-without-source", files({"path": "/o", "overwrite": True}))
    # Links crossing configured links.
    inv("file-used-symlink", storage(links=[{"path": "/l", "target": "/t"}], files=[{"path": "/l/f"}]))
    inv("directory-used-symlink", storage(links=[{"path": "/l", "target": "/t"}], directories=[{"path": "/l/d/e"}]))
    inv("link-used-symlink", storage(links=[{"path": "/l", "target": "/t"}, {"path": "/l/m", "target": "/u"}]))
    inv("link-target-missing", storage(links=[{"path": "/l"}]), "3.3.0")
    inv("link-target-empty", storage(links=[{"path": "/l", "target": ""}]), "3.3.0")
    inv("hard-link-to-directory", storage(directories=[{"path": "/d"}], links=[{"path": "/h", "target": "/d", "hard": True}]))
    # Owners.
    inv("file-user-id-and-name", files({"path": "/u", "user": {"id": 0, "name": "root"}}))
    inv("directory-group-id-and-name", storage(directories=[{"path": "/u", "group": {"id": 0, "name": "root"}}]))
    inv("link-user-id-and-name", storage(links=[{"path": "/u", "target": "/t", "user": {"id": 0, "name": "root"}}]))
    # Filesystems.
    inv("filesystem-format-unknown", storage(filesystems=[{"device": "/dev/vdb", "format": "ntfs"}]))
    for fmt, limit in [("ext4", 16), ("xfs", 12), ("swap", 15), ("vfat", 11), ("btrfs", 256)]:
        inv(f"filesystem-{fmt}-label-too-long", storage(filesystems=[{"device": "/dev/vdb", "format": fmt, "label": "L" * (limit + 1)}]))
    inv("filesystem-label-needs-format", storage(filesystems=[{"device": "/dev/vdb", "label": "X"}]))
    inv("filesystem-format-nil-with-path", storage(filesystems=[{"device": "/dev/vdb", "path": "/var"}]))
    inv("filesystem-format-nil-with-wipe", storage(filesystems=[{"device": "/dev/vdb", "wipeFilesystem": True}]))
    inv("filesystem-format-nil-with-options", storage(filesystems=[{"device": "/dev/vdb", "options": ["-F"]}]))
    inv("filesystem-device-missing", storage(filesystems=[{"format": "ext4"}]))
    inv("filesystem-device-relative", storage(filesystems=[{"device": "dev/vdb", "format": "ext4"}]))
    # Partitions and disks.
    inv("disk-device-missing", storage(disks=[{"wipeTable": True}]))
    inv("partition-label-too-long", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "label": "p" * 37}]}]))
    inv("partition-label-colon", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "label": "a:b"}]}]))
    inv("partition-typeguid-bad", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "typeGuid": "linux"}]}]))
    inv("partition-guid-bad", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "guid": "0FC63DAF-8483-4772-8E79-3D69D8477DE"}]}]))
    inv("partition-should-not-exist-with-others", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "shouldExist": False, "label": "x"}]}]))
    inv("partition-should-not-exist-no-number", storage(disks=[{"device": "/dev/vdb", "partitions": [{"label": "x", "shouldExist": False}]}]))
    inv("partition-numbers-collide-label-and-number", storage(disks=[{"device": "/dev/vdb", "partitions": [{"number": 1, "label": "A"}, {"number": 1, "label": "B"}]}]))
    # Units.
    inv("unit-no-extension", {"systemd": {"units": [{"name": "foo"}]}})
    inv("unit-bad-extension", {"systemd": {"units": [{"name": "foo.bar"}]}})
    inv("dropin-bad-extension", {"systemd": {"units": [{"name": "foo.service", "dropins": [{"name": "x.txt"}]}]}})
    inv("dropin-no-extension", {"systemd": {"units": [{"name": "foo.service", "dropins": [{"name": "x"}]}]}})
    inv("unit-contents-unclosed-section", {"systemd": {"units": [{"name": "u.service", "contents": "[Service\nExecStart=/bin/true\n"}]}})
    inv("unit-contents-line-without-equals", {"systemd": {"units": [{"name": "u.service", "contents": "[Service]\nExecStart\n"}]}})
    inv("dropin-contents-unparseable", {"systemd": {"units": [{"name": "u.service", "dropins": [{"name": "a.conf", "contents": "[Service\n"}]}]}})
    inv("unit-name-missing", {"systemd": {"units": [{"enabled": True}]}})
    # HTTP headers and proxies.
    inv("header-name-empty", files({"path": "/h", "contents": {"source": "https://e/x", "httpHeaders": [{"name": "", "value": "v"}]}}), "3.1.0")
    inv("header-names-duplicate", files({"path": "/h", "contents": {"source": "https://e/x", "httpHeaders": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}), "3.1.0")
    inv("header-on-data-source", files({"path": "/h", "contents": {"source": data_plain("x"), "httpHeaders": [{"name": "A", "value": "1"}]}}), "3.1.0")
    inv("header-on-s3-source", files({"path": "/h", "contents": {"source": "s3://b/k", "httpHeaders": [{"name": "A", "value": "1"}]}}), "3.1.0")
    inv("header-value-empty", files({"path": "/h", "contents": {"source": "https://e/x", "httpHeaders": [{"name": "A", "value": ""}]}}), "3.1.0")
    inv("proxy-empty-string", {"ignition": {"proxy": {"httpProxy": ""}}}, "3.1.0")
    inv("proxy-http-scheme-ftp", {"ignition": {"proxy": {"httpProxy": "ftp://proxy"}}}, "3.1.0")
    inv("proxy-https-unparseable", {"ignition": {"proxy": {"httpsProxy": "http://[::1"}}}, "3.1.0")
    # RAID.
    inv("raid-level-missing", storage(raid=[{"name": "md", "devices": ["/dev/a", "/dev/b"]}]))
    inv("raid-level-unknown", storage(raid=[{"name": "md", "level": "raid7", "devices": ["/dev/a", "/dev/b"]}]))
    inv("raid0-with-spares", storage(raid=[{"name": "md", "level": "raid0", "devices": ["/dev/a", "/dev/b"], "spares": 1}]))
    inv("raid-linear-with-spares", storage(raid=[{"name": "md", "level": "linear", "devices": ["/dev/a", "/dev/b"], "spares": 1}]))
    inv("raid-devices-missing", storage(raid=[{"name": "md", "level": "raid1"}]))
    inv("raid-device-relative", storage(raid=[{"name": "md", "level": "raid1", "devices": ["dev/a"]}]))
    # LUKS.
    inv("luks-name-slash", storage(luks=[{"name": "a/b", "device": "/dev/vdb"}]), "3.2.0")
    inv("luks-label-too-long", storage(luks=[{"name": "c", "device": "/dev/vdb", "label": "l" * 48}]), "3.2.0")
    inv("luks-keyfile-bad-source", storage(luks=[{"name": "c", "device": "/dev/vdb", "keyFile": {"source": "ftp://k"}}]), "3.2.0")
    inv("luks-device-missing", storage(luks=[{"name": "c"}]), "3.2.0")
    inv("luks-clevis-custom-pin-missing", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"custom": {"config": "{}"}}}]), "3.3.0")
    inv("luks-clevis-custom-pin-unknown", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"custom": {"pin": "yubikey", "config": "{}"}}}]), "3.3.0")
    inv("luks-clevis-custom-config-missing", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"custom": {"pin": "tpm2"}}}]), "3.3.0")
    inv("luks-clevis-custom-with-tpm2", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"tpm2": True, "custom": {"pin": "tpm2", "config": "{}"}}}]), "3.3.0")
    inv("luks-tang-thumbprint-missing", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"tang": [{"url": "http://tang"}]}}]), "3.2.0")
    inv("luks-tang-url-bad", storage(luks=[{"name": "c", "device": "/dev/vdb", "clevis": {"tang": [{"url": "ftp://tang", "thumbprint": "t"}]}}]), "3.2.0")
    # Kernel arguments.
    inv("kargs-both-exist-and-not", {"kernelArguments": {"shouldExist": ["quiet"], "shouldNotExist": ["quiet"]}}, "3.3.0")
    # Timeouts and configs.
    # 3.0's config references skip VerificationAndNilSource; 3.1's resources check it.
    for version in each():
        add("config-replace-verification-no-source", version, {"ignition": {"config": {"replace": {"verification": {"hash": sha512(b"")}}}}},
            "valid" if version == "3.0.0" else "invalid", tree=False)
    # Ignition counts every configured link, hard ones too, as a link a path must not pass through.
    inv("file-under-hard-link", storage(files=[{"path": "/srv/t", "contents": {"source": data_plain("t")}}, {"path": "/srv/hl/x"}],
                                        links=[{"path": "/srv/hl", "target": "/srv/t", "hard": True}]))
    # Schemes a later spec added.
    add("source-gs-before-3-2", "3.1.0", files({"path": "/gs", "contents": {"source": "gs://bucket/obj"}}), "invalid", tree=False)
    add("source-s3-arn-before-3-4", "3.3.0", files({"path": "/a", "contents": {"source": "arn:aws:s3:::bucket/key"}}), "invalid", tree=False)
    for arn, label in [("arn:aws:s3:::bucket", "no-key"), ("arn:aws:sqs:us-east-1:123456789012:queue/x", "not-s3"), ("arn:aws:s3", "short"),
                       ("arn:aws:s3:::bucket/key?versionId=", "empty-version")]:
        add(f"source-s3-arn-{label}", "3.4.0-experimental", files({"path": "/a", "contents": {"source": arn}}), "invalid", tree=False)


def ignition_validate(path):
    done = subprocess.run(["ignition-validate", path], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    errors = [line for line in lines if not line.startswith("warning")]
    return ("valid" if done.returncode == 0 else "invalid"), (errors[0] if errors and done.returncode != 0 else "")


def main():
    if shutil.which("ignition-validate") is None:
        sys.exit("ignition-validate (Debian package ignition) is needed: the manifest's verdicts come from Ignition itself")
    valid_files()
    valid_nodes()
    valid_units()
    valid_passwd()
    valid_mixes()
    valid_not_tree()
    newer_ignition_differs()
    invalid()
    names = [case[0] for case in cases]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        sys.exit(f"case names must be unique: {duplicated}")
    check = "--check" in sys.argv[1:]
    manifest, surprises, stale = [], [], []
    for name, version, raw, intent, tree in sorted(cases):
        path = os.path.join(HERE, name + ".ign")
        if check:
            with open(path, encoding="utf-8") as existing:
                if existing.read() != raw:
                    stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as out:
                out.write(raw)
        expected, message = ignition_validate(path)
        if expected != intent and name not in SURPRISES:
            surprises.append(f"{name}: meant {intent}, Ignition says {expected} {message}")
        manifest.append({"name": name, "version": version, "expected": expected, "tree_comparable": tree and expected == "valid", "ignition_error": message})
    leftovers = sorted(set(f[:-4] for f in os.listdir(HERE) if f.endswith(".ign")) - set(names))
    if check:
        stale += leftovers
    else:
        # A case renamed or removed must not leave its old file behind for the test to miss.
        for name in leftovers:
            os.remove(os.path.join(HERE, name + ".ign"))
    if stale:
        sys.exit(f"corpus files differ from the generator's output: {stale}")
    if surprises:
        sys.exit("Ignition disagrees with the intent of:\n  " + "\n  ".join(surprises))
    # One entry per line, keys in a fixed order: the test reads it without a JSON library.
    text = "[\n" + ",\n".join(json.dumps(entry) for entry in manifest) + "\n]\n"
    manifest_path = os.path.join(HERE, "manifest.json")
    if check:
        with open(manifest_path, encoding="utf-8") as existing:
            if existing.read() != text:
                sys.exit("manifest.json differs from the generator's output")
    else:
        with open(manifest_path, "w", encoding="utf-8") as out:
            out.write(text)
    valid = sum(1 for entry in manifest if entry["expected"] == "valid")
    tree = sum(1 for entry in manifest if entry["tree_comparable"])
    print(f"{len(manifest)} configs: {valid} valid ({tree} tree-comparable), {len(manifest) - valid} invalid")
    for version in VERSIONS:
        of_version = [entry for entry in manifest if entry["version"] == version]
        print(f"  {version}: {sum(1 for e in of_version if e['expected'] == 'valid')} valid, {sum(1 for e in of_version if e['expected'] == 'invalid')} invalid")


if __name__ == "__main__":
    main()
