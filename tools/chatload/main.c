/*
 * chatload: an open-model load generator for chatd. `seed` creates a data
 * set through the API; `run` drives staged load and writes JSON/Markdown;
 * `realtime` measures the WebSocket stream (delivery, latency, reconnects).
 */
#include "chatload.h"
#include "rt.h"

#include <stdio.h>
#include <string.h>

static void usage(void)
{
    fprintf(
        stderr,
        "usage: chatload seed --url URL --users N --conversations N --messages N --seed N "
        "--out FILE\n"
        "       chatload run  --url URL --seedfile FILE --stages C:R:S[,C:R:S...] [--mix ...]\n"
        "                     [--zipf S] [--json FILE] [--report FILE] [--seed N]\n"
        "       chatload realtime --url URL [--seedfile FILE] [--clients N]\n"
        "                     (--rate SENDS_PER_S | --frame-rate FRAMES_PER_S) [--seconds S]\n"
        "                     [--no-reconnect] [--chatd-pid PID] [--json FILE] [--report FILE]\n"
        "Targets must be loopback (127.0.0.0/8 or ::1). See tools/chatload/README.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "seed") == 0)
        return cl_cmd_seed(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0)
        return cl_cmd_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "realtime") == 0)
        return cl_cmd_realtime(argc - 1, argv + 1);
    usage();
    return 2;
}
