"""Memory of a PostgreSQL backend, read from /proc (shared by the benchmarks)."""


def proc_status(pid):
    """VmRSS / RssAnon / RssFile / RssShmem / VmHWM of a backend in MiB, or None when /proc is not readable."""
    try:
        d = {}
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                d[k] = int(v.split()[0]) / 1024
        return d
    except OSError:
        return None


def fmt_rss(d):
    if d is None:
        return "n/a (/proc not readable: run on the server's machine)"
    return (f"VmRSS {d['VmRSS']:.0f} MiB (RssAnon {d['RssAnon']:.0f}, RssFile {d['RssFile']:.0f}, "
            f"RssShmem {d.get('RssShmem', 0):.0f}), VmHWM {d['VmHWM']:.0f} MiB")
