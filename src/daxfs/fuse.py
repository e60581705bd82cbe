"""fuse: a mounted pool served to the kernel through FUSE, for ordinary tools.

``Server`` answers the kernel's requests (fusewire.py speaks the protocol)
over one daxfs.FileSystem; ``serve()`` mounts, runs it until the mount goes
away (``fusermount3 -u``, SIGINT, SIGTERM, SIGHUP) and unmounts.  ``daxfs
mount`` (cli/mount.py) owns the pool's lifetime around it.

What FUSE changes, and why:

* Files are named by inode, as the kernel names them.  A request names a
  node (the daxfs inode number: the kernel holds one inode per daxfs
  inode, so every name of a hard-linked file shows one link count) and,
  for a call on a name, the name in that directory.  The server hands the
  FileSystem ``path.Ino`` and ``path.At`` paths, so each call resolves one
  name from its directory: no path from the root is ever built, and
  PATH_MAX applies to the path the caller passed (the kernel's check), not
  to the file's depth.
* The kernel caches names and attributes (ENTRY_TIMEOUT, ATTR_TIMEOUT) and
  fills both from one READDIRPLUS, so `find` and `ls -l` ask once per
  directory.  Other processes may change the pool through the Python API at
  any time; when this mount catches up with their commits
  (FileSystem.on_foreign_change) the server tells the kernel to drop what
  went stale: the attributes of every inode a commit wrote (before the reply
  to the request that caught up, so that request's caller sees them) and
  every name it gave out that now names something else (from a watcher
  thread: a name's notification waits for requests in its directory, which
  the serving thread must be free to answer).  A watcher also catches up
  when no request comes, every WATCH_PERIOD.  Names that do not exist are
  not cached (a negative timeout of 0), so a name another process makes
  shows at once.  File data goes through the page cache, which the kernel
  drops at every open and when a file's size or mtime changes under it.
* Reads copy.  The kernel hands the server a buffer to fill, so every read
  is a copy out of the pool and a write copies the caller's bytes in (from
  the request buffer, without another copy); the zero-copy path
  (``fs.map``) exists only in the Python API.  Requests carry up to 1 MiB.
* Nodes: a node id is the file's inode number, unless the kernel still
  holds that number for a file since gone (the pool gives freed numbers
  to new files): then the new file gets a node of its own until the
  kernel forgets the old one (Tracker).  Calls on a node name its file by
  number and birth time, so a call meant for a file that is gone finds
  it gone, and entries carry a generation made from the birth time.
* Open files are handles.  Each open/create pins the inode with a daxfs
  file object, so a file unlinked while open keeps working and becomes an
  orphan that the last release frees, as in the Python API.
* Holes: lseek's SEEK_DATA and SEEK_HOLE come from the extent map, so
  sparse-aware tools skip them.
* The kernel applies the caller's umask before create, mkdir and mknod, so
  the FileSystem's own umask is set to 0 here.
* Ownership: a new file gets the uid and gid of the process that asked
  (the request's), or the group of a setgid directory, and chown sets them.
  Permissions: FUSE lets only the user who mounted in.  ``allow_other`` lets
  others in and adds default_permissions, so the kernel checks every caller
  against the modes and owners getattr reports, as for a local file system
  (the server, like the library, checks nothing itself).
* FIFOs, device nodes and sockets: mknod makes them in the pool; the
  kernel does their I/O (a mount is nodev, so devices do not open).
* Errors: every daxfs OSError is answered with its errno, so tools print
  the usual message ("Directory not empty", ...).
* Not supported: extended attributes (ENOSYS, which the kernel turns into
  EOPNOTSUPP and stops asking), fallocate modes other than 0 (EOPNOTSUPP),
  rename with RENAME_EXCHANGE (EINVAL).  File locks are kept by the kernel.
* One thread serves: daxfs serialises calls anyway, and a request costs
  one read, one unpack and one write.  Between requests it looks for the
  next one for a moment before it sleeps (fusewire.POLL_SECONDS): a
  request that finds it asleep pays for waking it, which on a virtual
  machine whose idle vCPUs halt is most of a round trip.  With
  ``io_uring`` (``daxfs mount --io-uring``), requests come through FUSE
  over io_uring instead (fuseuring.py): a thread pinned to each CPU
  answers the requests made on it, one request at a time in all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Callable

from . import fuseuring
from . import fusewire as w
from .fileio import DaxRawFile
from .follow import Moved
from .fs import NO_ID, FileSystem
from .inode import Inode
from .layout import BLOCK, CHUNK, CorruptionError
from .path import ROOT_INO, At, Ino

log = logging.getLogger(__name__)

# How long the kernel may trust a name or attributes it was given.  What
# other processes change is dropped from its cache as the server learns of
# it (see the module docstring); this bounds what a lost notification costs.
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0
VALIDITY = w.validity(ENTRY_TIMEOUT, ATTR_TIMEOUT)  # (as fuse_entry_out has them)
ATTR_OUT = w.ATTR_OUT_HEAD.pack(*w.split_seconds(ATTR_TIMEOUT), 0)
DOTS = (b".", b"..")
NS = 10**9
WATCH_PERIOD = 0.005  # how often the watcher looks for others' commits
MAX_WRITE = 1 << 20  # the largest read or write request (1 MiB)
UNMOUNT_WAIT = 5.0  # seconds for io_uring queues to end once unmounted
QUEUE_SETUP_WAIT = 10.0  # seconds for every CPU's queue to register its entries
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
DT_UNKNOWN = 0


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _open_mode(flags: int) -> str:
    """The daxfs mode for open(2) flags.  Never "w" or "a": O_TRUNC is applied
    separately and O_APPEND offsets come from the kernel."""
    return "rb" if flags & os.O_ACCMODE == os.O_RDONLY else "r+b"


class Tracker:
    """What the kernel holds: the nodes it was given, the lookup count of
    each, and the names it was given in each directory (what each named).
    Kept to tell it exactly what went stale, and to name each node's file;
    shared by the serving threads and the watcher.  A node the kernel
    forgets takes its names with it (a cached name holds its node), so
    this stays the size of the kernel's cache, not of the tree.

    A node names one file for as long as the kernel holds it (until its
    FORGET), as the protocol asks: the file's inode number, or, when the
    kernel still holds that number for another file (one since removed,
    whose number the pool gave to this one), a node of its own from
    ALIASES on.  The file a node names is its number and its birth time
    (the inode's btime): a call on a node whose number now belongs to
    another file finds its own file gone (path.Ino, ``born``)."""

    ALIASES = 1 << 56  # the first node of a file's own: past every inode number

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lookups: dict[int, int] = {}
        self.files: dict[int, tuple[int, int]] = {}  # node -> (inode number, birth time)
        self.nodes: dict[tuple[int, int], int] = {}  # the other way
        self.aliases: dict[int, set[int]] = {}  # inode number -> the nodes of its own
        self.names: dict[int, dict[str, int]] = {}  # directory -> name -> node
        self.named: dict[int, set[tuple[int, str]]] = {}  # node -> its names given
        self._next_alias = self.ALIASES

    def give(self, parent: int, entries: list[tuple[str, int, int]]) -> list[int]:
        """The kernel is given each (name, inode number, birth time) of
        ``entries`` in node ``parent``: the node of each, counted."""
        nodes = []
        with self.lock:
            lookups, named, known = self.lookups, self.named, self.nodes
            names = self.names.setdefault(parent, {})
            for name, ino, born in entries:
                node = known.get((ino, born))
                if node is None:
                    node = self._new_node(ino, born)
                nodes.append(node)
                lookups[node] = lookups.get(node, 0) + 1
                names[name] = node
                named.setdefault(node, set()).add((parent, name))
        return nodes

    def _new_node(self, ino: int, born: int) -> int:
        if ino in self.files:  # (the kernel holds the number for a file since gone)
            node, self._next_alias = self._next_alias, self._next_alias + 1
            self.aliases.setdefault(ino, set()).add(node)
        else:
            node = ino
        self.nodes[ino, born] = node
        self.files[node] = (ino, born)
        return node

    def file_of(self, node: int) -> tuple[int, int | None]:
        """The inode number and birth time of the file ``node`` names (no
        birth time for the root, which is never replaced, or a node not
        given here)."""
        got = self.files.get(node)  # (one dict read: no lock needed)
        return (node, None) if got is None else got

    def dropped(self, parent: int, name: str, node: int | None = None) -> None:
        """The kernel no longer holds ``name`` (if ``node`` is given: as that
        node; a name given anew since, for another node, stays)."""
        with self.lock:
            if node is None or self.names.get(parent, {}).get(name) == node:
                self._drop(parent, name)

    def moved(self, parent: int, name: str, newparent: int, newname: str) -> None:
        """A rename through the mount: the kernel moved its entry (the node's
        lookup count stays), and dropped the one it replaced."""
        with self.lock:
            node = self.names.get(parent, {}).get(name)
            self._drop(newparent, newname)
            self._drop(parent, name)
            if node is not None:
                self.names.setdefault(newparent, {})[newname] = node
                self.named.setdefault(node, set()).add((newparent, newname))

    def _drop(self, parent: int, name: str) -> None:
        names = self.names.get(parent)
        node = None if names is None else names.pop(name, None)
        if node is not None:
            self.named.get(node, set()).discard((parent, name))
            if not names:
                del self.names[parent]

    def forget(self, node: int, n: int) -> None:
        with self.lock:
            left = self.lookups.get(node, 0) - n
            if left > 0:
                self.lookups[node] = left
                return
            self.lookups.pop(node, None)
            held = self.files.pop(node, None)
            if held is not None:
                del self.nodes[held]
                if node != held[0]:
                    aliases = self.aliases[held[0]]
                    aliases.discard(node)
                    if not aliases:
                        del self.aliases[held[0]]
            for parent, name in self.named.pop(node, ()):
                if self.names.get(parent, {}).get(name) == node:
                    self._drop(parent, name)

    def known(self, inos) -> list[int]:
        """The nodes the kernel holds of the inode numbers ``inos``."""
        with self.lock:
            files, aliases = self.files, self.aliases
            out = [ino for ino in inos if ino in files]
            out += [node for ino in inos if ino in aliases for node in aliases[ino]]
        root = ROOT_INO in inos and ROOT_INO not in files  # (the root, never given)
        return [w.ROOT_ID, *out] if root else out

    def all_inos(self) -> set[int]:
        """The inode numbers of every file the kernel holds, the root's too."""
        with self.lock:
            return {ROOT_INO, *(ino for ino, _born in self.files.values())}

    def names_in(self, dirs) -> dict[int, dict[str, int]]:
        """The names given in the directories of inode numbers ``dirs``, by
        the directory's node."""
        parents = self.known(dirs)
        with self.lock:
            return {p: dict(self.names[p]) for p in parents if self.names.get(p)}


class Server:
    """Answers the kernel's requests over ``fs`` on ``channel``; with
    ``io_uring``, through FUSE over io_uring (fuseuring.py) once the kernel
    agrees, each CPU's requests by a thread of its own."""

    QUEUE_DEPTH = 2  # ring entries per CPU: a request being answered, one waiting

    def __init__(self, fs: FileSystem, channel: w.Channel, io_uring: bool = False):
        self.fs, self.ch = fs, channel
        self.io_uring = io_uring
        self.queues: list[threading.Thread] = []
        # What a queue's thread calls when it cannot go on (serve() makes it
        # stop the server, as a stop signal does).
        self.on_fatal: Callable[[], None] | None = None
        # One request at a time, whichever thread it came to (the FileSystem
        # serialises its calls anyway; this covers the server's own state).
        self._serving = threading.Lock()
        fs.umask = 0  # the kernel has applied the caller's umask already
        fs.path_max = None  # (paths here are names and inodes: see path.At)
        self._caller = (os.geteuid(), os.getegid())
        fs.creator = lambda: self._caller  # new files are the caller's
        self.files: dict[int, DaxRawFile] = {}
        self.listings: dict[int, list[tuple[bytes, int, int]] | None] = {}
        self._next_fh = 1
        self.track = Tracker()
        # Stale in the kernel, found by catching up: inodes whose attributes
        # to drop (before the next reply), directories whose names the
        # watcher checks, and inodes whose cached pages the kernel must not
        # keep at their next open.
        self._stale_lock = threading.Lock()
        self._stale_inodes: set[int] = set()
        self._stale_dirs: set[int] = set()
        self._stale_data: set[int] = set()
        # Inodes the kernel holds that others' commits wrote: the watcher
        # drops the cached targets of the symlinks among them.
        self._stale_links: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.started = False  # set once the kernel has spoken to us (FUSE_INIT)
        self.stop_asked = False
        self._reading = False
        self.served = 0  # requests handled (bench fuse counts them per command)
        # Does a close(2) of a writable file make its overwrites durable
        # (DataPath._overwrite: on the page cache, at flush and close)?
        self._flush_writes = fs.region.durability.name == "msync"
        fs.on_foreign_change = self._foreign_change
        self.handlers: dict[int, Callable] = {
            w.LOOKUP: self.lookup,
            w.FORGET: self.forget,
            w.BATCH_FORGET: self.batch_forget,
            w.GETATTR: self.getattr,
            w.SETATTR: self.setattr,
            w.READLINK: self.readlink,
            w.SYMLINK: self.symlink,
            w.MKNOD: self.mknod,
            w.MKDIR: self.mkdir,
            w.UNLINK: self.unlink,
            w.RMDIR: self.rmdir,
            w.RENAME: self.rename,
            w.RENAME2: self.rename2,
            w.LINK: self.link,
            w.OPEN: self.open,
            w.CREATE: self.create,
            w.READ: self.read,
            w.WRITE: self.write,
            w.FLUSH: self.flush,
            w.RELEASE: self.release,
            w.FSYNC: self.fsync,
            w.FALLOCATE: self.fallocate,
            w.LSEEK: self.lseek,
            w.OPENDIR: self.opendir,
            w.READDIRPLUS: self.readdirplus,
            w.RELEASEDIR: self.releasedir,
            w.FSYNCDIR: self.fsyncdir,
            w.STATFS: self.statfs,
            w.INTERRUPT: self.no_reply,
        }

    # -- the loop ----------------------------------------------------------
    def init(self) -> None:
        """The first request is FUSE_INIT: agree on the protocol."""
        req = self.ch.read()
        if req.opcode != w.INIT:
            raise w.MountFailed(f"the kernel began with request {req.opcode}, not INIT")
        major, minor, readahead, offered = w.INIT_IN.unpack_from(req.args)
        if major != w.KERNEL_MAJOR or minor < w.KERNEL_MINOR or not offered & w.DO_READDIRPLUS:
            self.ch.reply_error(req.unique, errno.EPROTO)
            raise w.MountFailed(f"the kernel speaks FUSE {major}.{minor}; 7.31 or later needed")
        ring = self.io_uring and minor >= fuseuring.MINOR and fuseuring.kernel_offers(req.args)
        if self.io_uring and not ring:
            self.ch.reply_error(req.unique, errno.EPROTO)
            raise w.MountFailed(
                "this kernel does not offer FUSE over io_uring "
                f"(Linux 6.14 or later, with {fuseuring.ENABLE_KNOB} set to Y by root)"
            )
        wanted = (
            w.ASYNC_READ
            | w.ATOMIC_O_TRUNC
            | w.BIG_WRITES
            | w.AUTO_INVAL_DATA
            | w.DO_READDIRPLUS
            | w.MAX_PAGES
            | w.CACHE_SYMLINKS
            | w.HANDLE_KILLPRIV_V2
        )
        out = w.INIT_OUT.pack(
            w.KERNEL_MAJOR,
            fuseuring.MINOR if ring else w.KERNEL_MINOR,
            readahead,
            (wanted & offered) | (fuseuring.INIT_EXT if ring else 0),
            16,  # max_background
            12,  # congestion_threshold
            MAX_WRITE,
            1,  # time_gran: nanoseconds
            MAX_WRITE // 4096,  # max_pages
            0,
            fuseuring.OVER_IO_URING if ring else 0,  # flags2
        )
        self.ch.reply(req.unique, out)  # (the kernel has taken it in when this returns)
        self.started = True
        if ring:
            self._start_queues()

    def _start_queues(self) -> None:
        """A thread per CPU, pinned to it, registering its queue's entries
        and then serving them; returns once every queue said how its
        registration went.  A queue the kernel took no entry on keeps the
        ring from going live (it waits for all), so /dev/fuse serves
        everything then; the other queues' threads wait for requests that
        never come, until the mount goes away."""
        results: queue.Queue[bool] = queue.Queue()
        qids = fuseuring.queue_ids()
        for qid in qids:
            name = f"daxfs-fuse-q{qid}"
            t = threading.Thread(target=self._serve_queue, args=(qid, results), name=name)
            t.daemon = True
            t.start()
            self.queues.append(t)
        try:
            live = all(results.get(timeout=QUEUE_SETUP_WAIT) for _ in qids)
        except queue.Empty:
            live = False
        if not live:
            log.warning("FUSE over io_uring could not be set up: serving through /dev/fuse")
            return
        # What still comes through /dev/fuse (FORGET, INTERRUPT) needs no
        # haste, and a thread looking for it would hold the GIL the queues'
        # threads need.
        self.ch.poll_seconds = 0.0

    def _serve_queue(self, qid: int, results: queue.Queue[bool]) -> None:
        # This thread gets qid's requests; a CPU that is possible but not
        # online cannot be pinned to, and its queue gets none.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {qid})
        ring = None
        try:
            ring = fuseuring.Queue(self.ch.fd, qid, self.QUEUE_DEPTH, MAX_WRITE)
            ring.register()
        except Exception as e:  # (no io_uring, entries refused, ...)
            log.warning("FUSE over io_uring, CPU %d: %s", qid, e)
            if ring is not None:
                ring.close()
            results.put(False)
            return
        results.put(True)
        try:
            ring.serve(self.handle)
        except Exception:
            # The kernel sends this CPU's requests here and nowhere else:
            # without this thread they would wait forever.  End the mount.
            log.exception("FUSE over io_uring, CPU %d: stopping", qid)
            if self.on_fatal is not None:
                self.on_fatal()
        finally:
            ring.close()

    def join_queues(self, timeout: float) -> None:
        """After the mount is gone: wait for the queues' threads to end."""
        for t in self.queues:
            t.join(timeout)

    def run(self) -> None:
        """Serve until the mount goes away or a stop signal comes."""
        watcher = threading.Thread(target=self._watch, name="daxfs-fuse-watch", daemon=True)
        watcher.start()
        try:
            while True:
                self._reading = True
                try:
                    if self.stop_asked:  # (asked before _reading was set)
                        break
                    req = self.ch.read()
                finally:
                    self._reading = False
                self.handle(req)
        except (w.ChannelClosed, StopServing):
            pass
        finally:
            self._stopping.set()
            self._wake.set()
            watcher.join()
            self.close_all()

    def ask_stop(self) -> None:
        """A stop signal: end at once if waiting for a request, else after
        the one being served."""
        self.stop_asked = True
        if self._reading:
            raise StopServing

    def handle(self, req: w.Request, out=None) -> None:
        """Answer ``req`` through ``out`` (a Channel, the default, or a ring
        entry: fuseuring.Entry)."""
        with self._serving:
            self._handle(req, self.ch if out is None else out)

    def _handle(self, req: w.Request, out) -> None:
        self.served += 1
        fn = self.handlers.get(req.opcode)
        if fn is None:
            out.reply_error(req.unique, errno.ENOSYS)
            return
        self._caller = (req.uid, req.gid)
        parts, code = None, 0
        try:
            parts = self._answer(fn, req)
        except OSError as e:
            code = e.errno or errno.EIO
        except ValueError as e:  # bad arguments (an out-of-range id, ...)
            log.debug("request %d: %s", req.opcode, e)
            code = errno.EINVAL
        except (StopServing, w.ChannelClosed):
            raise
        except Exception:
            log.exception("request %d failed", req.opcode)
            code = errno.EIO
        self._drop_stale_attrs()  # (before the answer: see _drop_stale_attrs)
        if code:
            out.reply_error(req.unique, code)
        elif parts is not None:
            out.reply(req.unique, *parts)

    @staticmethod
    def _answer(fn: Callable, req: w.Request):
        """``fn(req)``, again for as long as the pool moves under it: only
        a follower's sections raise Moved (follow.py), and its requests
        only read, so running one again changes nothing but the answer."""
        while True:
            try:
                return fn(req)
            except Moved:
                continue

    def no_reply(self, req: w.Request) -> None:
        return None

    def close_all(self) -> None:
        """The mount is gone: release what the kernel never released (a lazy
        or forced unmount), so the pool unmounts cleanly."""
        with self._serving:
            leftover, self.files = list(self.files.values()), {}
            for raw in leftover:
                raw.close()
            self.fs.on_foreign_change = None

    # -- others' changes: what the kernel must drop --------------------------
    def _foreign_change(self, inodes: set[int] | None, dirs: set[int] | None) -> None:
        """FileSystem.on_foreign_change: note what went stale (called with
        the pool locked, by whichever thread caught up).  After a full
        rebuild (None), whatever the kernel holds may be."""
        with self._stale_lock:
            if inodes is None or dirs is None:
                inodes = dirs = self.track.all_inos()
            self._stale_inodes |= inodes
            self._stale_dirs |= dirs
            known = self.track.known(inodes)  # (only those can have pages)
            self._stale_data.update(known)
            self._stale_links.update(known)
        self._wake.set()

    def _drop_stale_attrs(self) -> None:
        """Tell the kernel to drop the attributes of the inodes others
        changed (attributes only: that never waits on anything, so it is
        safe before a reply)."""
        if not self._stale_inodes:
            return
        with self._stale_lock:
            inodes, self._stale_inodes = self._stale_inodes, set()
        for node in self.track.known(inodes):
            self._notify(self.ch.inval_attrs, node)

    def _keep_pages(self, ino: int) -> bool:
        """May the kernel keep the pages it cached of ``ino`` at this open?
        Not when another process's commit wrote its inode (its size, blocks
        or mtime) since the last open: then the open drops them, as every
        open did before caching (the kernel drops them itself, in the
        opener's context: a notification from here could wait on a page
        a queued read holds).  So a close by another process is seen by
        the next open, as NFS promises (close-to-open)."""
        with self._stale_lock:
            if ino in self._stale_data:
                self._stale_data.discard(ino)
                return False
        return True

    def _watch(self) -> None:
        """Catch up when no request comes; drop names others changed."""
        fs = self.fs
        while not self._stopping.is_set():
            self._wake.wait(WATCH_PERIOD)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if fs.journal.peek() != fs._seen_seq:
                    with fs._locked(exclusive=False):
                        pass  # (catching up calls _foreign_change)
                self._drop_stale_attrs()
                self._drop_stale_names()
                self._drop_stale_links()
            except Moved:
                pass  # (a follower's pool moved meanwhile: the next look sees it)
            except Exception:  # (the pool closing under us at the end)
                if not self._stopping.is_set():
                    log.exception("watcher")

    def _drop_stale_names(self) -> None:
        with self._stale_lock:
            dirs, self._stale_dirs = self._stale_dirs, set()
        given = self.track.names_in(dirs)
        if not given:
            return
        stale = []
        fs = self.fs
        try:
            with fs._locked(exclusive=False):
                for parent, names in given.items():
                    stale += [(parent, name, node) for name, node in self._gone(parent, names)]
        except Moved:
            with self._stale_lock:  # (looked at again next time)
                self._stale_dirs |= dirs
            raise
        for parent, name, node in stale:
            self.track.dropped(parent, name, node)
            self._notify(self.ch.inval_entry, parent, name.encode("utf-8", "surrogateescape"))

    def _drop_stale_links(self) -> None:
        """Drop the cached target of each symlink another process's commit
        wrote.  An inode number freed and reused for a new symlink leaves
        the kernel its inode (the same node, the same type) and, as it
        caches symlinks, the old target, which no refresh of attributes
        drops (the kernel does that for a regular file's pages only).  From
        the watcher: dropping it waits for a READLINK of it in flight, which
        the serving thread answers."""
        with self._stale_lock:
            nodes, self._stale_links = self._stale_links, set()
        links = []
        try:
            for node in nodes:
                try:
                    if stat.S_ISLNK(self._stat(node).st_mode):
                        links.append(node)
                except OSError:  # (CorruptionError too)
                    pass  # (gone: its names are dropped, its inode forgotten)
        except Moved:
            with self._stale_lock:  # (looked at again next time)
                self._stale_links |= nodes
            raise
        for node in links:
            self._notify(self.ch.inval_data, node)

    def _gone(self, parent: int, names: dict[str, int]) -> list[tuple[str, int]]:
        """The (name, node) of ``names``, given in node ``parent``, that no
        longer name their node's file there (pool lock held)."""
        fs, file_of = self.fs, self.track.file_of
        entries = self._entries_now(parent)  # (none: the directory itself is gone)
        gone = []
        for name, node in names.items():
            ino, born = file_of(node)
            now = entries.get(name)
            try:
                if now is None or now[0] != ino or not fs._is_born(ino, born):
                    gone.append((name, node))
            except OSError:
                gone.append((name, node))
        return gone

    @staticmethod
    def _notify(send: Callable, *args) -> None:
        try:
            send(*args)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.warning("FUSE notification failed: %s", e)

    # -- replies -------------------------------------------------------------
    def _ino(self, node: int) -> Ino:
        """The file node ``node`` names, as a path."""
        return Ino(*self.track.file_of(node))

    def _at(self, name: str, node: int) -> At:
        """Name ``name`` in the directory node ``node`` names, as a path."""
        return At(name, *self.track.file_of(node))

    def _stat(self, node: int) -> os.stat_result:
        return self.fs.lstat(self._ino(node))

    def _found(self, path: At | Ino) -> Found:
        """What ``path`` names (a symlink itself), as one commit has it."""
        return self.fs._query(self.fs._answer_for, path, False, found)

    def _entry(self, parent: int, name: str, file: Found) -> tuple[bytes]:
        """A new or found entry for the kernel: counted as one lookup."""
        ino, attr, born = file
        (node,) = self.track.give(parent, [(name, ino, born)])
        return (w.entry_bytes(node, attr, VALIDITY, w.generation(born)),)

    def _attr(self, st: os.stat_result) -> tuple[bytes, bytes]:
        return ATTR_OUT, w.attr_bytes(st)

    def _file(self, fh: int) -> DaxRawFile:
        raw = self.files.get(fh)
        if raw is None:
            raise OSError(errno.EBADF, "no such FUSE file handle")
        return raw

    def _register(self, raw: DaxRawFile) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.files[fh] = raw
        return fh

    # -- names -----------------------------------------------------------------
    def lookup(self, req: w.Request):
        name = _name(w.split_names(req.args, 1)[0])
        return self._entry(req.nodeid, name, self._found(self._at(name, req.nodeid)))

    def forget(self, req: w.Request) -> None:
        (n,) = w.FORGET_IN.unpack_from(req.args)
        self.track.forget(req.nodeid, n)

    def batch_forget(self, req: w.Request) -> None:
        count, _ = w.BATCH_FORGET_IN.unpack_from(req.args)
        for i in range(count):
            node, n = w.FORGET_ONE.unpack_from(
                req.args, w.BATCH_FORGET_IN.size + i * w.FORGET_ONE.size
            )
            self.track.forget(node, n)

    def mknod(self, req: w.Request):
        # FIFOs, devices and sockets (mkfifo, mknod, a unix socket's bind):
        # the kernel does their I/O; the pool keeps the name and attributes.
        # The device number comes as Linux's 32-bit encoding, which is
        # os.makedev's for every number a pool keeps.
        mode, rdev, _umask, _ = w.MKNOD_IN.unpack_from(req.args)
        name = _name(w.split_names(req.args[w.MKNOD_IN.size :], 1)[0])
        at = self._at(name, req.nodeid)
        self.fs.mknod(at, mode, rdev)
        return self._entry(req.nodeid, name, self._found(at))

    def mkdir(self, req: w.Request):
        mode, _umask = w.MKDIR_IN.unpack_from(req.args)
        name = _name(w.split_names(req.args[w.MKDIR_IN.size :], 1)[0])
        at = self._at(name, req.nodeid)
        self.fs.mkdir(at, mode)
        return self._entry(req.nodeid, name, self._found(at))

    def symlink(self, req: w.Request):
        name, target = (_name(n) for n in w.split_names(req.args, 2))
        at = self._at(name, req.nodeid)
        self.fs.symlink(target, at)
        return self._entry(req.nodeid, name, self._found(at))

    def link(self, req: w.Request):
        (old,) = w.LINK_IN.unpack_from(req.args)
        name = _name(w.split_names(req.args[w.LINK_IN.size :], 1)[0])
        at = self._at(name, req.nodeid)
        self.fs.link(self._ino(old), at)
        return self._entry(req.nodeid, name, self._found(at))

    def unlink(self, req: w.Request):
        name = _name(w.split_names(req.args, 1)[0])
        self.fs.unlink(self._at(name, req.nodeid))
        self.track.dropped(req.nodeid, name)
        return ()

    def rmdir(self, req: w.Request):
        name = _name(w.split_names(req.args, 1)[0])
        self.fs.rmdir(self._at(name, req.nodeid))
        self.track.dropped(req.nodeid, name)
        return ()

    def rename(self, req: w.Request):
        (newdir,) = w.RENAME_IN.unpack_from(req.args)
        return self._rename(req, newdir, 0, req.args[w.RENAME_IN.size :])

    def rename2(self, req: w.Request):
        newdir, flags, _ = w.RENAME2_IN.unpack_from(req.args)
        return self._rename(req, newdir, flags, req.args[w.RENAME2_IN.size :])

    def _rename(self, req: w.Request, newdir: int, flags: int, names: memoryview):
        old, new = (_name(n) for n in w.split_names(names, 2))
        src, dst = self._at(old, req.nodeid), self._at(new, newdir)
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "rename flags not supported")
        fs = self.fs
        if flags & RENAME_NOREPLACE:
            # The existence check and the rename under one exclusive pool lock,
            # so no one can create ``new`` in between.
            with fs._locked(exclusive=True):
                if fs.exists(dst) or fs.islink(dst):
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
                fs.rename(src, dst)
        else:
            fs.rename(src, dst)
        self.track.moved(req.nodeid, old, newdir, new)
        return ()

    def readlink(self, req: w.Request):
        return (self.fs.readlink(self._ino(req.nodeid)).encode("utf-8", "surrogateescape"),)

    # -- attributes --------------------------------------------------------------
    def getattr(self, req: w.Request):
        return self._attr(self._stat(req.nodeid))

    def setattr(self, req: w.Request):
        (valid, _, _, size, _, atime, mtime, _, atimens, mtimens, _, mode, _, uid, gid, _) = (
            w.SETATTR_IN.unpack_from(req.args)
        )
        fs, node = self.fs, self._ino(req.nodeid)
        if valid & w.FATTR_SIZE:  # (an ftruncate's handle names this inode too)
            fs.truncate(node, size)
            if valid & w.FATTR_KILL_SUIDGID:
                self._drop_setid(req, node)
        if valid & (w.FATTR_UID | w.FATTR_GID) or not valid & w.FATTR_CHANGES:
            # A chown; nothing asked is chown(f, -1, -1), which drops the
            # bits too (or, the same, the kernel asking to drop them before
            # a write through the page cache).
            self._chown(
                req,
                uid if valid & w.FATTR_UID and uid != NO_ID else -1,
                gid if valid & w.FATTR_GID and gid != NO_ID else -1,
            )
        if valid & w.FATTR_MODE:
            fs.chmod(node, mode)
        if valid & (w.FATTR_ATIME | w.FATTR_MTIME):
            now = time.time_ns()
            self._set_times(
                node,
                _time(valid, w.FATTR_ATIME, w.FATTR_ATIME_NOW, atime, atimens, now),
                _time(valid, w.FATTR_MTIME, w.FATTR_MTIME_NOW, mtime, mtimens, now),
            )
        return self._attr(self._stat(req.nodeid))

    def _chown(self, req: w.Request, uid: int, gid: int) -> None:
        """fs.chown drops setuid, and setgid of a group-executable file, as
        Linux does for root; the kernel leaves the rest of the rule to the
        server (HANDLE_KILLPRIV_V2): setgid goes too when the caller is
        neither in the file's group (before the change) nor holds
        CAP_FSETID."""
        path = self._ino(req.nodeid)
        st = self.fs.lstat(path)
        also = _sgid_only(st.st_mode) and not _in_group_or_capable(req, st.st_gid)
        self.fs.chown(path, uid, gid)
        if also:
            self.fs.chmod(path, stat.S_IMODE(st.st_mode) & ~_SETID)

    def _drop_setid(self, req: w.Request, path: Ino) -> None:
        """A write or truncate by a caller the kernel found without
        CAP_FSETID (a flag in the request): drop setuid, and setgid when the
        file is group-executable or the caller is not in its group, as
        Linux's setattr_should_drop_suidgid."""
        st = self.fs.lstat(path)
        mode = st.st_mode
        if not stat.S_ISREG(mode) or not mode & _SETID:
            return
        kill = stat.S_ISUID
        if mode & stat.S_IXGRP or not _in_group(req, st.st_gid):
            kill |= stat.S_ISGID
        if mode & kill:
            self.fs.chmod(path, stat.S_IMODE(mode) & ~kill)

    def _set_times(self, path: Ino, atime: int | None, mtime: int | None) -> None:
        """Set (atime, mtime) in ns, None leaving one as it is (UTIME_OMIT), and
        ctime to now: one change on the inode itself (a symlink's own times
        for lutimes)."""
        fs = self.fs
        with fs._change():
            inode = fs._inode(fs._existing(path).ino)  # type: ignore[arg-type]
            inode.atime = inode.atime if atime is None else atime
            inode.mtime = inode.mtime if mtime is None else mtime
            inode.ctime = time.time_ns()
            fs._txn_dirty.add(inode.ino)

    def statfs(self, req: w.Request):
        v = self.fs.statvfs()
        return (
            w.STATFS_OUT.pack(
                v.f_blocks, v.f_bfree, v.f_bavail, v.f_files, v.f_ffree,
                v.f_bsize, v.f_namemax, v.f_frsize, 0,
            ),
        )  # fmt: skip

    # -- files -------------------------------------------------------------------
    def _opened(self, req: w.Request, path: Ino, flags: int, open_flags: int) -> int:
        raw = self.fs.open(path, _open_mode(flags), buffering=0)
        try:
            if flags & os.O_TRUNC:  # even with O_RDONLY, as Linux does
                self.fs._truncate_ino(raw._ino, 0)
                if open_flags & w.OPEN_KILL_SUIDGID:
                    self._drop_setid(req, Ino(raw._ino))
        except BaseException:
            raw.close()
            raise
        return self._register(raw)

    def open(self, req: w.Request):
        flags, open_flags = w.OPEN_IN.unpack_from(req.args)
        # (Caught up by the open: _stale_data is current.)
        fh = self._opened(req, self._ino(req.nodeid), flags, open_flags)
        how = _open_flags(flags, self._flush_writes)
        how |= w.FOPEN_KEEP_CACHE if self._keep_pages(req.nodeid) else 0
        return (w.OPEN_OUT.pack(fh, how, 0),)

    def create(self, req: w.Request):
        flags, mode, _umask, open_flags = w.CREATE_IN.unpack_from(req.args)
        name = _name(w.split_names(req.args[w.CREATE_IN.size :], 1)[0])
        at = self._at(name, req.nodeid)
        try:
            ino = self.fs._create_with(at, b"", stat.S_IMODE(mode))
            fh = self._opened(req, Ino(ino), flags & ~os.O_TRUNC, 0)
        except FileExistsError:
            # Someone made it since the kernel's lookup: plain open, as open(2).
            if flags & os.O_EXCL:
                raise
            fh = self._opened(req, Ino(self.fs.lstat(at).st_ino), flags, open_flags)
        file = self._found(Ino(self.files[fh]._ino))
        how = _open_flags(flags, self._flush_writes)
        return (*self._entry(req.nodeid, name, file), w.OPEN_OUT.pack(fh, how, 0))

    def read(self, req: w.Request):
        fh, off, size, *_ = w.READ_IN.unpack_from(req.args)
        return (self.fs._pread(self._file(fh)._ino, off, size),)

    def write(self, req: w.Request):
        fh, off, size, write_flags, *_ = w.WRITE_IN.unpack_from(req.args)
        data = req.args[w.WRITE_IN.size : w.WRITE_IN.size + size]
        ino = self._file(fh)._ino
        if write_flags & w.WRITE_KILL_SUIDGID:  # (before: a write that fails drops them too)
            self._drop_setid(req, Ino(ino))
        self.fs._pwrite(ino, off, data)
        return (w.WRITE_OUT.pack(size, 0),)

    def flush(self, req: w.Request):
        # Every close(2) of a descriptor: make its writes and times durable,
        # as closing a daxfs file does (a read-only one wrote nothing).
        (fh, *_) = w.FLUSH_IN.unpack_from(req.args)
        raw = self._file(fh)
        if raw._writable:
            self.fs._flush_ino(raw._ino)
        return ()

    def release(self, req: w.Request):
        (fh, *_) = w.RELEASE_IN.unpack_from(req.args)
        raw = self.files.pop(fh, None)
        if raw is not None:
            raw.close()  # unpins; frees the inode if it was an unlinked orphan
        return ()

    def fsync(self, req: w.Request):
        (fh, *_) = w.FSYNC_IN.unpack_from(req.args)
        self.fs._fsync_ino(self._file(fh)._ino)  # (lazy mode: a group commit)
        return ()

    def fallocate(self, req: w.Request):
        # daxfs fallocate is posix_fallocate (mode 0); glibc falls back to
        # writing zeroes on EOPNOTSUPP.
        fh, off, length, mode, _ = w.FALLOCATE_IN.unpack_from(req.args)
        if mode != 0:
            raise OSError(errno.EOPNOTSUPP, "fallocate mode not supported")
        self.fs.fallocate(Ino(self._file(fh)._ino), off, length)
        return ()

    def lseek(self, req: w.Request):
        """SEEK_DATA and SEEK_HOLE from the extent map, so that cp, tar
        --sparse and rsync skip holes (a 2^62-byte file with no blocks is
        copied in an instant, not read as zeroes); the kernel answers the
        other whences itself."""
        fh, off, whence, _ = w.LSEEK_IN.unpack_from(req.args)
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "lseek whence")
        pos = self.fs._seek_data(self._file(fh)._ino, off, hole=whence == os.SEEK_HOLE)
        return (w.LSEEK_OUT.pack(pos),)

    # -- directories -------------------------------------------------------------
    def opendir(self, req: w.Request):
        fh = self._next_fh
        self._next_fh += 1
        self.listings[fh] = None  # (taken by the first readdir)
        return (w.OPEN_OUT.pack(fh, 0, 0),)

    def _take_listing(self, node: int) -> list[tuple[bytes, int, int]]:
        """A directory's entries at one commit, "." and ".." first: readdir
        calls resume by position in it, and one at position 0 (a first read,
        or rewinddir) takes it again, as POSIX asks.  (Pool lock held.)"""
        fs = self.fs
        ino, entries = fs._entries_of(self._ino(node))
        parent = fs._parent_of(ino)
        listing = [(b".", ino, stat.S_IFDIR >> 12), (b"..", parent, stat.S_IFDIR >> 12)]
        for e in entries:
            listing.append(
                (e.name.encode("utf-8", "surrogateescape"), e.inode(), e.type_bits() >> 12)
            )
        return listing

    def readdirplus(self, req: w.Request):
        """Entries with their attributes, each given to the kernel as a
        lookup ("." and ".." as plain entries, node 0, as the protocol has
        them)."""
        fh, off, size, *_ = w.READ_IN.unpack_from(req.args)
        used, fs = 0, self.fs
        # (name, its fuse_dirent, what it names or None), then the nodes of
        # those given, counted once the answer stands (see _answer).
        listed: list[tuple[str, bytes, Found | None]] = []
        with fs._locked(exclusive=False):  # (one commit's listing and attributes)
            listing = self._listing_of(req, fh, off)
            at = listing[0][1]  # (".": the directory's number)
            entries = self._entries_now(req.nodeid)
            for i in range(off, len(listing)):
                name, ino, ftype = listing[i]
                dirent = w.dirent_bytes(ino, i + 1, name, ftype)
                used += w.ENTRY_OUT.size + len(dirent)
                if used > size:
                    break
                text = _name(name)
                file = None if name in DOTS else self._listed(at, entries, text, ino, ftype)
                listed.append((text, dirent, file))
        given = [(text, file[0], file[2]) for text, _d, file in listed if file is not None]
        nodes = iter(self.track.give(req.nodeid, given))
        out = []
        for _text, dirent, file in listed:
            if file is None:
                out.append(w.entry_bytes(0, None, VALIDITY))
            else:
                out.append(w.entry_bytes(next(nodes), file[1], VALIDITY, w.generation(file[2])))
            out.append(dirent)
        return (b"".join(out),)

    def _entries_now(self, node: int) -> dict:
        """The entries of directory ``node`` at the last commit (none once
        it is gone; pool lock held)."""
        fs = self.fs
        try:
            ino, born = self.track.file_of(node)
            return fs._cached_dir(ino).entries if fs._is_born(ino, born) else {}
        except OSError:  # (CorruptionError too)
            return {}

    def _listed(self, at: int, entries, name: str, ino: int, ftype: int) -> Found | None:
        """What a listed entry names, checked as a lookup checks it; None
        (it goes as a plain entry) for one whose inode is damaged (the
        kernel's lookup of it then meets the damage), or which the
        directory's ``entries`` no longer hold (since the listing was
        taken: its number may be another file's by now)."""
        fs = self.fs
        now = entries.get(name)
        if now is None or now[0] != ino or not fs.inodes.in_use(ino):
            return None
        try:
            fs._check_entry(at, name, ino, ftype)
            return found(fs._inode(ino))
        except CorruptionError:
            return None

    def _listing_of(self, req: w.Request, fh: int, off: int) -> list[tuple[bytes, int, int]]:
        if fh not in self.listings:
            raise OSError(errno.EBADF, "no such FUSE directory handle")
        listing = self.listings[fh]
        if listing is None or off == 0:
            listing = self.listings[fh] = self._take_listing(req.nodeid)
        return listing

    def releasedir(self, req: w.Request):
        (fh, *_) = w.RELEASE_IN.unpack_from(req.args)
        self.listings.pop(fh, None)
        return ()

    def fsyncdir(self, req: w.Request):
        self.fs._commit_now()  # (lazy mode: names made durable by a group commit)
        return ()


def _open_flags(flags: int, flush_writes: bool) -> int:
    """How the kernel is to treat an open with open(2) ``flags``.  One that
    cannot read skips the page cache (FOPEN_DIRECT_IO): each write(2) is then
    one request, where cached writes come split at the first page boundary
    of each unaligned write (tar's, whose records follow 512-byte headers:
    two changes each), and it cannot be mapped anyway (mmap needs read
    access).  One that cannot write asks for no FLUSH at close: it has
    nothing to flush.  Nor does one that can, unless ``flush_writes``: a
    pool whose overwrites are made durable at close (on the page cache);
    elsewhere a FLUSH would only write lazy times, which the RELEASE after
    the last close writes too, and it costs a round trip per close."""
    mode = flags & os.O_ACCMODE
    how = w.FOPEN_DIRECT_IO if mode == os.O_WRONLY else 0
    if mode == os.O_RDONLY or not flush_writes:
        how |= w.FOPEN_NOFLUSH
    return how


# What an entry gives the kernel of a file: its inode number, fuse_attr
# fields and birth time (which picks its node and generation).
Found = tuple[int, tuple[int, ...], int]


def found(i: Inode) -> Found:
    return i.ino, inode_attr(i), i.btime


def inode_attr(i: Inode) -> tuple[int, ...]:
    """A daxfs inode as the fields of a fuse_attr: what
    ``w.attr_fields(fs._stat_result(i))`` gives, without the stat result
    between (a READDIRPLUS makes one per entry: with its other trims, 4.6
    to 3.2 us an entry; test_fuse checks the two agree)."""
    size, a, m, c = i.size, i.atime, i.mtime, i.ctime
    return (
        i.ino, size, i.allocated_bytes // 512,
        (a // NS) & w.U64, (m // NS) & w.U64, (c // NS) & w.U64, a % NS, m % NS, c % NS,
        i.mode, i.nlink, i.uid, i.gid, i.rdev, CHUNK if size >= CHUNK else BLOCK, 0,
    )  # fmt: skip


_SETID = stat.S_ISUID | stat.S_ISGID
CAP_FSETID = 4  # (linux/capability.h)


def _sgid_only(mode: int) -> bool:
    """Setgid on a regular file that is not group-executable: the one bit a
    chown by root keeps and one by a user outside the group drops."""
    return stat.S_ISREG(mode) and mode & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID


def _caller_status(pid: int) -> dict[str, str]:
    """The caller's /proc/PID/status (the request's pid is its thread, blocked
    in the call), as field -> value; empty if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _in_group(req: w.Request, gid: int) -> bool:
    """Is the caller in group ``gid`` (its file-system gid or a supplementary
    group)?  Not when that cannot be told: then the bit goes, the safe side."""
    return req.gid == gid or _in_groups(_caller_status(req.pid), gid)


def _in_group_or_capable(req: w.Request, gid: int) -> bool:
    """Linux's in_group_or_capable: in the group, or holding CAP_FSETID."""
    if req.gid == gid:
        return True
    status = _caller_status(req.pid)  # (read once for both)
    return _in_groups(status, gid) or bool(int(status.get("CapEff", "0"), 16) >> CAP_FSETID & 1)


def _in_groups(status: dict[str, str], gid: int) -> bool:
    """Is ``gid`` among the supplementary groups of a /proc/PID/status?"""
    return str(gid) in status.get("Groups", "").split()


def _time(valid: int, bit: int, now_bit: int, sec: int, nsec: int, now: int) -> int | None:
    """One time of a setattr in ns: None if not asked, now for UTIME_NOW."""
    if not valid & bit:
        return None
    if valid & now_bit:
        return now
    if sec >= 1 << 63:  # (a time before 1970 comes as a 64-bit two's complement)
        sec -= 1 << 64
    return sec * 10**9 + nsec


class StopServing(Exception):
    """A stop signal came while the server waited for a request."""


class MountError(RuntimeError):
    """The mount could not be made (the reason is in the message)."""


def _escape_option(value: str) -> str:
    """A value inside the comma-separated -o list (fusermount3 takes a
    backslash before a comma)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def serve(
    fs: FileSystem,
    mountpoint: str,
    *,
    foreground: bool,
    readonly: bool,
    pool_name: str,
    allow_other: bool = False,
    io_uring: bool = False,
) -> Server:
    """Mount ``fs`` at ``mountpoint`` and serve it until unmounted.  Without
    ``foreground`` the process forks once the mount exists: the parent
    exits (status 0) and the child serves.  ``allow_other``: users other
    than the one mounting may use it, and the kernel checks everyone's
    permissions on the modes and owners getattr reports
    (default_permissions).  Returns the server (its ``started`` tells
    whether the kernel ever connected); raises MountError when the mount
    could not be made."""
    if not fs.readonly and readonly:
        raise ValueError("a read-only FUSE mount needs a read-only FileSystem")
    options = ["fsname=daxfs:" + _escape_option(pool_name), "subtype=daxfs", "nosuid", "nodev"]
    if readonly:
        options.append("ro")  # the kernel itself answers EROFS
    if allow_other:
        options += ["allow_other", "default_permissions"]
    try:
        fd = w.mount(mountpoint, options)
    except w.MountFailed as e:
        raise MountError(str(e)) from None
    channel = w.Channel(fd, MAX_WRITE)
    server = Server(fs, channel, io_uring=io_uring)
    server.on_fatal = lambda: os.kill(os.getpid(), signal.SIGTERM)
    try:
        if not foreground:
            _daemonize()
        server.init()
        previous = {s: signal.signal(s, lambda *_: server.ask_stop()) for s in STOP_SIGNALS}
        try:
            server.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        channel.close()
        w.unmount(mountpoint)
        server.join_queues(UNMOUNT_WAIT)  # (the unmount ended their rings)
    return server


def _daemonize() -> None:
    """Fork: the parent exits with status 0 once the child runs, as libfuse's
    fuse_daemonize does; the child leaves the terminal and its directory
    and sends its output to /dev/null."""
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        os.read(ready_r, 1)
        os._exit(0)
    os.close(ready_r)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.write(ready_w, b"x")
    os.close(ready_w)
