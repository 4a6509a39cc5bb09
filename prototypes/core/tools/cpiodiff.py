"""Compare two initrd images (concatenated compressed newc archives): list entries that differ."""
import hashlib, subprocess, sys

def entries(path):
    raw = subprocess.run(f"xz -dc {path} 2>/dev/null || zstd -dc {path} || gzip -dc {path}", shell=True,
                         capture_output=True).stdout
    out, i, arch = {}, 0, 0
    while i < len(raw):
        if raw[i:i+6] != b"070701":
            i += 1; continue
        f = [int(raw[i+6+8*k:i+14+8*k], 16) for k in range(13)]
        namesize, filesize = f[11], f[6]
        name = raw[i+110:i+110+namesize-1].decode()
        j = i + 110 + namesize; j += -j % 4
        data = raw[j:j+filesize]; j += filesize; j += -j % 4
        if name == "TRAILER!!!": arch += 1
        else: out[name] = (f[1], hashlib.sha256(data).hexdigest()[:12], filesize)
        i = j
    return out

a, b = entries(sys.argv[1]), entries(sys.argv[2])
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        print(k, a.get(k), b.get(k))
