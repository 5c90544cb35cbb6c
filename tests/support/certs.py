"""Throwaway X.509 material for the SSL tests, made with the ``openssl`` command line tool.

``make_pki(directory)`` writes (PEM, EC P-256 keys) and returns their paths by name:

- ``ca.pem`` / ``ca.key``: a test CA;
- ``srv.pem`` / ``srv.key``: server certificate for 127.0.0.1 and localhost (SAN), signed by the CA;
- ``other.pem`` / ``other.key``: server certificate for ``other.example`` only, signed by the CA;
- ``self.pem`` / ``self.key``: self-signed server certificate for 127.0.0.1 and localhost;
- ``client.pem`` / ``client.key``: client certificate signed by the CA.

The extensions are those Python 3.13's ``VERIFY_X509_STRICT`` insists on (critical basic
constraints, key usage, key identifiers), so the certificates work on every supported Python.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

_CA = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
"""

LOCAL_SAN = "IP:127.0.0.1, DNS:localhost"


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    assert exe, "the openssl command line tool is needed for the SSL tests"
    subprocess.run([exe, *args], check=True, capture_output=True, timeout=30)


def _self_signed(d: Path, name: str, cn: str, extensions: str) -> None:
    """``req -x509`` reads its extensions from a config section: give it a minimal config."""
    cnf = d / f"{name}.cnf"
    cnf.write_text("[req]\ndistinguished_name = dn\n[dn]\n[v3]\n" + extensions)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(d / f"{name}.key"))
    _openssl("req", "-new", "-x509", "-key", str(d / f"{name}.key"), "-subj", f"/CN={cn}", "-days", "2",
             "-config", str(cnf), "-extensions", "v3", "-out", str(d / f"{name}.pem"))


def _signed(d: Path, name: str, cn: str, usage: str, san: str) -> None:
    key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text(_LEAF.format(usage=usage) + "authorityKeyIdentifier = keyid:always\n"
                   + (f"subjectAltName = {san}\n" if san else ""))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(d / f"{name}.pem"))


def make_pki(directory: Path) -> Dict[str, str]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _self_signed(d, "ca", "ipyrpyc test CA", _CA)
    _signed(d, "srv", "127.0.0.1", "serverAuth", LOCAL_SAN)
    _signed(d, "other", "other.example", "serverAuth", "DNS:other.example")
    _signed(d, "client", "ipyrpyc test client", "clientAuth", "")
    _self_signed(d, "self", "127.0.0.1", _LEAF.format(usage="serverAuth") + f"subjectAltName = {LOCAL_SAN}\n")
    return {p.name: str(p) for p in d.iterdir() if p.suffix in (".pem", ".key")}
