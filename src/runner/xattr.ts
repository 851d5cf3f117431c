// Extended attributes without a native addon: Node has no xattr API, so a short perl script (perl-base is
// on every Debian/Ubuntu host) calls lsetxattr/lgetxattr through syscall(2). Used for overlayfs opaque
// directories (trusted.overlay.opaque=y) and PAX xattrs from layers.
import { spawn } from "node:child_process";
import os from "node:os";

const SYSCALLS: Record<string, { lsetxattr: number; lgetxattr: number; llistxattr: number }> = {
  x64: { lsetxattr: 189, lgetxattr: 192, llistxattr: 195 },
  arm64: { lsetxattr: 6, lgetxattr: 9, llistxattr: 12 },
};

function numbers() {
  const n = SYSCALLS[os.arch()];
  if (!n) throw new Error(`xattr: unsupported architecture ${os.arch()}`);
  return n;
}

// Lines on stdin: "s <hex path> <hex name> <hex value>" (set) or "g <hex path> <hex name>" (get).
// "l <hex path>" lists all xattrs with values.
// Output per line: "ok" / "err <errno>" for set, "v <hex value>" / "none" for get,
// "x <hexname>:<hexvalue> …" for list.
const SCRIPT = `
$| = 1;
my ($SET, $GET, $LIST) = @ARGV;
while (my $l = <STDIN>) {
  chomp $l;
  my ($op, @a) = split / /, $l;
  my @v = map { pack("H*", $_) } @a;
  if ($op eq "l") {
    my $names = "\\0" x 65536;
    my $n = syscall($LIST, $v[0], $names, 65536);
    my @out;
    if ($n > 0) {
      for my $name (split /\\0/, substr($names, 0, $n)) {
        next unless length $name;
        my $buf = "\\0" x 65536;
        my $r = syscall($GET, $v[0], $name, $buf, 65536);
        push @out, unpack("H*", $name) . ":" . unpack("H*", substr($buf, 0, $r)) if $r >= 0;
      }
    }
    print join(" ", "x", @out) . "\\n";
  } elsif ($op eq "s") {
    my $r = syscall($SET, $v[0], $v[1], $v[2], length($v[2]), 0);
    print $r == 0 ? "ok\\n" : "err " . ($!+0) . "\\n";
  } else {
    my $buf = "\\0" x 65536;
    my $r = syscall($GET, $v[0], $v[1], $buf, 65536);
    print $r >= 0 ? "v " . unpack("H*", substr($buf, 0, $r)) . "\\n" : "none\\n";
  }
}
`;

async function runBatch(lines: string[]): Promise<string[]> {
  if (!lines.length) return [];
  const n = numbers();
  return await new Promise((resolve, reject) => {
    const p = spawn("perl", ["-e", SCRIPT, String(n.lsetxattr), String(n.lgetxattr), String(n.llistxattr)], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => { out += d; });
    p.stderr.on("data", (d) => { err += d; });
    p.on("error", reject);
    p.on("close", (code) => {
      if (code !== 0) return reject(new Error(`xattr helper (perl) failed: ${err}`));
      resolve(out.split("\n").slice(0, lines.length));
    });
    p.stdin.end(lines.join("\n") + "\n");
  });
}

const hex = (s: string | Buffer) => Buffer.from(s).toString("hex");

/** Sets xattrs (not following symlinks); throws on a failure of an item marked `required`. */
export async function setXattrs(items: { path: string; name: string; value: Buffer | string; required?: boolean }[]): Promise<void> {
  const res = await runBatch(items.map((i) => `s ${hex(i.path)} ${hex(i.name)} ${hex(i.value)}`));
  res.forEach((r, idx) => {
    if (r !== "ok" && items[idx].required !== false) throw new Error(`setxattr ${items[idx].name} on ${items[idx].path}: ${r}`);
  });
}

/** Reads one xattr of many paths; null where it is not set. */
export async function getXattrs(paths: string[], name: string): Promise<(Buffer | null)[]> {
  const res = await runBatch(paths.map((p) => `g ${hex(p)} ${hex(name)}`));
  return res.map((r) => (r.startsWith("v ") ? Buffer.from(r.slice(2), "hex") : null));
}

export const OPAQUE_XATTR = "trusted.overlay.opaque";

/** All xattrs of many paths (not following symlinks). */
export async function listXattrs(paths: string[]): Promise<Record<string, Buffer>[]> {
  const res = await runBatch(paths.map((p) => `l ${hex(p)}`));
  return res.map((r) => {
    const out: Record<string, Buffer> = {};
    for (const item of r.split(" ").slice(1)) {
      const [n, v] = item.split(":");
      if (n) out[Buffer.from(n, "hex").toString()] = Buffer.from(v ?? "", "hex");
    }
    return out;
  });
}
