// A light stand-in for qemu-system-x86_64, for the restart at scale (bench/restart-at-scale.mjs).
// It does what test/fixtures/fake-qemu.mjs does in its `normal` mode, where the daemon can tell,
// in one single-threaded process of a few hundred KiB: the node stand-in takes ~45 MiB a process,
// so 500 of them do not fit on the bench machine. The bench compiles it (gcc) into its own
// temporary directory; nothing built is committed.
//
//   --version            answers like QEMU (FAKE_QEMU_VERSION, default 7.2.0; same text as fake-qemu.mjs)
//   -netdev ...hostfwd=tcp::<port>-:<guest>   binds <port> on all interfaces, as QEMU's slirp does;
//                        each connection gets one line and is closed
//   -chardev socket,path=<p>,reconnect=1 (QEMU < 9.2) | reconnect-ms=N (>= 9.2)
//                        QMP as a client of the daemon's socket, retried at that interval when the
//                        connect fails or the connection drops (how a restarted daemon gets it back)
//   SIGTERM              SHUTDOWN event, exit 0
// Other FAKE_QEMU_MODEs are refused: the tests' failure modes stay with the node stand-in.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int vmajor = 7, vminor = 2;
static int qmp = -1;                 // the QMP connection, -1 while down
static struct sockaddr_un qmp_addr;  // zeroed: no -chardev given, no QMP
static long reconnect_ms;            // 0: never retried (like QEMU without reconnect)
static long next_connect = -1;       // monotonic ms of the next attempt, -1: none due
static int paused;
static volatile sig_atomic_t got_term;
static char buf[64 * 1024];          // one partial line at most; QMP commands are far smaller
static size_t blen;

static void out(int fd, const char *s) { (void)!write(fd, s, strlen(s)); }

static void fail(const char *what, const char *detail) {
  char m[1024];
  snprintf(m, sizeof m, "qemu-system-x86_64: %s%s\n", what, detail);
  out(2, m);
  exit(1);
}

static long now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000L + t.tv_nsec / 1000000L; }

// Value of `key` in QEMU's "k=v,k2,..." option syntax (",," is a literal comma) into `val`;
// 1 when the key is present (a bare key reads as ""), else 0.
static int opt(const char *s, const char *key, char *val, size_t n) {
  size_t klen = strlen(key);
  while (*s) {
    const char *k = s;
    while (*s && *s != '=' && *s != ',') s++;
    int match = (size_t)(s - k) == klen && !strncmp(k, key, klen);
    size_t i = 0;
    if (*s == '=') {
      for (s++; *s && !(*s == ',' && s[1] != ','); s++) {
        if (*s == ',') s++;  // ",," → ","
        if (match && i + 1 < n) val[i++] = *s;
      }
    }
    if (match) { val[i] = 0; return 1; }
    if (*s == ',') s++;
  }
  return 0;
}

// --- QMP: one JSON message per line, as QEMU (and fake-qemu.mjs) writes them ---

static void send_line(const char *s) {
  // Best effort, like a socket write that QEMU would queue: a lost daemon is noticed on read.
  if (qmp >= 0) (void)!send(qmp, s, strlen(s), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void emit(const char *event, const char *data) {
  struct timeval tv;
  char m[512];
  gettimeofday(&tv, NULL);
  snprintf(m, sizeof m, "{\"timestamp\":{\"seconds\":%ld,\"microseconds\":%ld},\"event\":\"%s\"%s%s}\n",
           (long)tv.tv_sec, (long)(tv.tv_usec / 1000 * 1000), event, data ? ",\"data\":" : "", data ? data : "");
  send_line(m);
}

static void shutdown_exit(int guest, const char *reason) {
  char d[128];
  snprintf(d, sizeof d, "{\"guest\":%s,\"reason\":\"%s\"}", guest ? "true" : "false", reason);
  emit("SHUTDOWN", d);
  if (qmp >= 0) close(qmp);  // what was sent is still delivered to the reader
  exit(0);
}

static const char *ws(const char *p) { return p + strspn(p, " \t\r"); }

// End of the JSON value starting at p (string, object, array or scalar); NULL if malformed.
static const char *skip_value(const char *p) {
  int depth = 0;
  do {
    if (*p == '"') {
      for (p++; *p != '"'; p++)
        if (!*p || (*p == '\\' && !*++p)) return NULL;
      p++;
    } else if (*p == '{' || *p == '[') depth++, p++;
    else if (*p == '}' || *p == ']') { if (--depth < 0) return NULL; p++; }
    else if (depth == 0) {  // a scalar: up to the next delimiter
      const char *s = p;
      while (*p && !strchr(",}] \t\r", *p)) p++;
      if (p == s) return NULL;
    } else p++;
  } while (depth > 0 && *p);
  return depth == 0 ? p : NULL;
}

// The raw text of a top-level member of the object on `line` (a key inside "arguments" never
// matches); 0 when absent or the line is not an object.
static int member(const char *line, const char *key, const char **v, int *n) {
  const char *p = ws(line);
  if (*p++ != '{') return 0;
  for (;;) {
    p = ws(p);
    if (*p != '"') return 0;
    const char *k = p + 1, *ke = skip_value(p);
    if (!ke) return 0;
    p = ws(ke);
    if (*p++ != ':') return 0;
    p = ws(p);
    const char *ve = skip_value(p);
    if (!ve) return 0;
    if ((size_t)(ke - 1 - k) == strlen(key) && !strncmp(k, key, ke - 1 - k)) { *v = p; *n = (int)(ve - p); return 1; }
    p = ws(ve);
    if (*p++ != ',') return 0;
  }
}

static void command(const char *line) {
  const char *ex, *id;
  int exn, idn;
  char m[512], idpart[160] = "";
  if (!member(line, "execute", &ex, &exn) || exn < 2 || *ex != '"') return;  // fake-qemu.mjs ignores these too
  if (member(line, "id", &id, &idn) && idn < 140) snprintf(idpart, sizeof idpart, ",\"id\":%.*s", idn, id);
  ex++, exn -= 2;
#define IS(name) (exn == (int)strlen(name) && !strncmp(ex, name, exn))
#define REPLY(ret) (snprintf(m, sizeof m, "{\"return\":%s%s}\n", ret, idpart), send_line(m))
  if (IS("qmp_capabilities")) REPLY("{}");
  else if (IS("query-status")) {
    REPLY(paused ? "{\"status\":\"paused\",\"singlestep\":false,\"running\":false}"
                 : "{\"status\":\"running\",\"singlestep\":false,\"running\":true}");
  } else if (IS("stop")) { paused = 1; REPLY("{}"); emit("STOP", NULL); }
  else if (IS("cont")) { paused = 0; REPLY("{}"); emit("RESUME", NULL); }
  else if (IS("system_powerdown")) {
    REPLY("{}");
    emit("POWERDOWN", NULL);
    out(1, "guest: power button: shutting down\n");
    shutdown_exit(1, "guest-shutdown");
  } else if (IS("quit")) { REPLY("{}"); shutdown_exit(0, "host-qmp-quit"); }
  else {
    snprintf(m, sizeof m, "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command %.*s has not been found\"}%s}\n",
             exn > 64 ? 64 : exn, ex, idpart);
    send_line(m);
  }
}

static void qmp_down(void) {
  if (qmp >= 0) close(qmp);
  qmp = -1;
  blen = 0;
  next_connect = reconnect_ms > 0 ? now_ms() + reconnect_ms : -1;
}

static void qmp_connect(void) {
  char m[256];
  next_connect = -1;
  if (!qmp_addr.sun_path[0]) return;
  // Non-blocking: a unix connect either succeeds at once or fails (ENOENT, ECONNREFUSED, EAGAIN).
  qmp = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (qmp < 0 || connect(qmp, (struct sockaddr *)&qmp_addr, sizeof qmp_addr) != 0) { qmp_down(); return; }
  snprintf(m, sizeof m, "{\"QMP\":{\"version\":{\"qemu\":{\"micro\":0,\"minor\":%d,\"major\":%d},\"package\":\"fake\"},\"capabilities\":[\"oob\"]}}\n",
           vminor, vmajor);
  send_line(m);
}

static void qmp_read(void) {
  ssize_t r = read(qmp, buf + blen, sizeof buf - 1 - blen);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r <= 0) { qmp_down(); return; }
  blen += (size_t)r;
  buf[blen] = 0;
  char *line = buf, *nl;
  while ((nl = memchr(line, '\n', blen - (size_t)(line - buf)))) {
    *nl = 0;
    command(line);
    line = nl + 1;
  }
  blen -= (size_t)(line - buf);
  memmove(buf, line, blen);
  if (blen == sizeof buf - 1) qmp_down();  // a line longer than any command: drop the connection
}

static void on_term(int sig) { (void)sig; got_term = 1; }

int main(int argc, char **argv) {
  const char *v = getenv("FAKE_QEMU_VERSION");
  char version[64], val[256];
  snprintf(version, sizeof version, "%s", v ? v : "7.2.0");
  sscanf(version, "%d.%d", &vmajor, &vminor);
  if (argc > 1 && !strcmp(argv[1], "--version")) {
    char m[256];
    snprintf(m, sizeof m, "QEMU emulator version %s (fake)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n", version);
    out(1, m);
    return 0;
  }
  const char *mode = getenv("FAKE_QEMU_MODE");
  if ((mode && strcmp(mode, "normal")) || getenv("FAKE_QEMU_MODE_FILE")) fail("fake-qemu-lite: only the normal mode; use test/fixtures/fake-qemu.mjs", "");
  int new_qemu = vmajor > 9 || (vmajor == 9 && vminor >= 2);

  int host_port = -1, guest_port = -1;
  for (int i = 1; i + 1 < argc; i++) {
    const char *a = argv[i], *next = argv[i + 1];
    if (!strcmp(a, "-netdev")) {
      const char *h = strstr(next, "hostfwd=tcp::");
      if (!h || sscanf(h, "hostfwd=tcp::%d-:%d", &host_port, &guest_port) != 2) fail("-netdev: no hostfwd rule: ", next);
    } else if (!strcmp(a, "-chardev")) {
      int has_s = opt(next, "reconnect", val, sizeof val);
      if (has_s && new_qemu) fail("-chardev: Parameter 'reconnect' is unexpected: ", next);
      if (has_s) reconnect_ms = atol(val) * 1000;
      int has_ms = opt(next, "reconnect-ms", val, sizeof val);
      if (has_ms && !new_qemu) fail("-chardev: Invalid parameter 'reconnect-ms': ", next);
      if (has_ms) reconnect_ms = atol(val);
      if (!opt(next, "path", val, sizeof val) || strlen(val) >= sizeof qmp_addr.sun_path) fail("-chardev: no usable path: ", next);
      qmp_addr.sun_family = AF_UNIX;
      strcpy(qmp_addr.sun_path, val);
    }
  }
  if (host_port < 0) fail("no -netdev given", "");

  out(1, "SeaBIOS (version fake)\nBooting from ROM...\n");
  out(2, "char device redirected to /dev/pts/9 (label compat_monitor0)\n");

  // SIGTERM is only taken inside ppoll, so it is never lost between a check and the wait.
  sigset_t term, waitmask;
  sigemptyset(&term), sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, &waitmask), sigdelset(&waitmask, SIGTERM);
  sigaction(SIGTERM, &(struct sigaction){.sa_handler = on_term}, NULL);
  signal(SIGPIPE, SIG_IGN);

  // The forward is bound during init, before QMP answers, as QEMU does (the daemon relies on it).
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)host_port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 16) != 0) {
    snprintf(val, sizeof val, "tcp::%d-:%d'", host_port, guest_port);
    fail("Could not set up host forwarding rule '", val);
  }
  qmp_connect();

  for (;;) {
    struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = qmp, .events = POLLIN}};
    long wait_ms = next_connect < 0 ? -1 : next_connect - now_ms();
    struct timespec ts = {wait_ms < 0 ? 0 : wait_ms / 1000, wait_ms < 0 ? 0 : (wait_ms % 1000) * 1000000L};
    int r = ppoll(p, qmp >= 0 ? 2 : 1, next_connect < 0 ? NULL : &ts, &waitmask);
    if (got_term) {
      out(2, "qemu-system-x86_64: terminating on signal 15 from pid 1\n");
      shutdown_exit(0, "host-signal");
    }
    if (r < 0) continue;  // EINTR
    if (p[0].revents & POLLIN) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        snprintf(val, sizeof val, "{\"guestPort\":%d,\"standin\":\"fake-qemu-lite\"}\n", guest_port);
        out(c, val);
        close(c);
      }
    }
    if (qmp >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) qmp_read();
    if (qmp < 0 && next_connect >= 0 && now_ms() >= next_connect) qmp_connect();
  }
}
