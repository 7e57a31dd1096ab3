# The embedded server's janitor: stops the server and removes its throwaway
# directory once the process that started them is gone, however it ended
# (a test binary whose server sits in a `static` never drops it).
#
# Standard input: the directory to remove, the server's `postmaster.pid`,
# then nothing until the starting process exits (or stops the server
# itself): its end of the pipe closes, and `cat` returns.
IFS= read -r scratch
IFS= read -r pidfile
cat >/dev/null
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    # Only a postgres of ours: the file may be stale after a crash.
    if [ -n "$pid" ] && grep -q postgres "/proc/$pid/cmdline" 2>/dev/null; then
        # Fast shutdown, then immediate, then kill; 20 s each.
        for signal in INT QUIT KILL; do
            kill "-$signal" "$pid" 2>/dev/null || break
            tries=0
            while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 200 ]; do
                sleep 0.1
                tries=$((tries + 1))
            done
            kill -0 "$pid" 2>/dev/null || break
        done
    fi
fi
[ -n "$scratch" ] && [ -d "$scratch" ] && rm -rf -- "$scratch"
exit 0
