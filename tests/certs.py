"""Throwaway X.509 material for the SSL tests, made with the ``openssl`` command line tool.

``make_pki(directory)`` writes (all PEM, EC P-256 keys):

- ``ca.pem`` / ``ca.key``: a test CA,
- ``srv.pem`` / ``srv.key``: a server certificate for 127.0.0.1 and localhost (in the SAN) signed by the CA,
- ``other.pem`` / ``other.key``: a server certificate for ``other.example`` only, signed by the CA,
- ``self.pem`` / ``self.key``: a self-signed server certificate for 127.0.0.1 and localhost,
- ``client.pem`` / ``client.key``: a client certificate signed by the CA.

The extensions follow what Python 3.13's ``VERIFY_X509_STRICT`` insists on (critical basic
constraints, key usage, key identifiers), so the certificates work on every Python we support.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

OPENSSL = shutil.which("openssl")

_CA_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
{san}
"""


def _run(*args: str) -> None:
    assert OPENSSL, "the openssl command line tool is needed for the SSL tests"
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)


def _key(path: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _leaf(d: Path, name: str, cn: str, usage: str, san: str, issuer: str) -> None:
    key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _key(key)
    ext.write_text(_LEAF_EXT.format(usage=usage, san=f"subjectAltName = {san}" if san else ""))
    if issuer == "self":
        ext.write_text(ext.read_text().replace("keyid:always", "keyid"))
        _run("req", "-new", "-x509", "-key", str(key), "-subj", f"/CN={cn}", "-days", "2",
             "-out", str(d / f"{name}.pem"), "-config", "/dev/null", "-extensions", "v3",
             "-addext", f"subjectAltName = {san}", "-addext", "basicConstraints = critical, CA:FALSE",
             "-addext", "keyUsage = critical, digitalSignature, keyEncipherment",
             "-addext", f"extendedKeyUsage = {usage}")
        return
    _run("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
    _run("x509", "-req", "-in", str(csr), "-CA", str(d / f"{issuer}.pem"), "-CAkey", str(d / f"{issuer}.key"),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(d / f"{name}.pem"))


def make_pki(directory: Path) -> Dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_ext = d / "ca.ext"
    ca_ext.write_text(_CA_EXT)
    _key(d / "ca.key")
    _run("req", "-new", "-x509", "-key", str(d / "ca.key"), "-subj", "/CN=ipyrpyc test CA", "-days", "2",
         "-out", str(d / "ca.pem"), "-config", str(ca_ext), "-extensions", "v3_ca_ipyrpyc",
         ) if False else None
    # ``req -x509`` takes extensions from a config section; write a minimal config for it.
    ca_cnf = d / "ca.cnf"
    ca_cnf.write_text("[req]\ndistinguished_name = dn\n[dn]\n[v3]\n" + _CA_EXT)
    _run("req", "-new", "-x509", "-key", str(d / "ca.key"), "-subj", "/CN=ipyrpyc test CA", "-days", "2",
         "-out", str(d / "ca.pem"), "-config", str(ca_cnf), "-extensions", "v3")
    san_local = "IP:127.0.0.1, DNS:localhost"
    _leaf(d, "srv", "127.0.0.1", "serverAuth", san_local, "ca")
    _leaf(d, "other", "other.example", "serverAuth", "DNS:other.example", "ca")
    _leaf(d, "client", "ipyrpyc test client", "clientAuth", "", "ca")
    # self-signed: its own config, so the key identifiers resolve against itself
    self_cnf = d / "self.cnf"
    self_cnf.write_text(
        "[req]\ndistinguished_name = dn\n[dn]\n[v3]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        f"subjectAltName = {san_local}\n"
    )
    _key(d / "self.key")
    _run("req", "-new", "-x509", "-key", str(d / "self.key"), "-subj", "/CN=127.0.0.1", "-days", "2",
         "-out", str(d / "self.pem"), "-config", str(self_cnf), "-extensions", "v3")
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir() if p.suffix in (".pem", ".key")}
