reset
set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'
set grid
set key outside right top noenhanced
set xlabel 'seconds since the start of the run'
set arrow from 1.000167239,graph 0 to 1.000167239,graph 1 nohead dt 3 lc rgb "#999999"
set label "1k, 800/s" at 1.000167239,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 91.012244268,graph 0 to 91.012244268,graph 1 nohead dt 3 lc rgb "#999999"
set label "5k, 800/s" at 91.012244268,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 181.01974798,graph 0 to 181.01974798,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 181.01974798,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 271.028028993,graph 0 to 271.028028993,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 1600/s" at 271.028028993,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 571.082450898,graph 0 to 571.082450898,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 571.082450898,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set output 'latency.svg'
set title 'Latency percentiles per second (ms, log scale)'
set logscale y
set ylabel 'ms'
plot 'bypass-timeline.dat' u 1:2 w l lw 1 lc rgb '#f4a582' t 'bypass p50', '' u 1:3 w l lw 2 lc rgb '#d6604d' t 'bypass p95', '' u 1:4 w l lw 1 lc rgb '#b2182b' t 'bypass p99', 'cached-timeline.dat' u 1:2 w l lw 1 lc rgb '#92c5de' t 'cache p50', '' u 1:3 w l lw 2 lc rgb '#4393c3' t 'cache p95', '' u 1:4 w l lw 1 lc rgb '#2166ac' t 'cache p99'
unset output

reset
set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'
set grid
set key outside right top noenhanced
set xlabel 'seconds since the start of the run'
set arrow from 1.000167239,graph 0 to 1.000167239,graph 1 nohead dt 3 lc rgb "#999999"
set label "1k, 800/s" at 1.000167239,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 91.012244268,graph 0 to 91.012244268,graph 1 nohead dt 3 lc rgb "#999999"
set label "5k, 800/s" at 91.012244268,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 181.01974798,graph 0 to 181.01974798,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 181.01974798,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 271.028028993,graph 0 to 271.028028993,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 1600/s" at 271.028028993,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 571.082450898,graph 0 to 571.082450898,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 571.082450898,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set output 'throughput.svg'
set title 'Answers per second (2xx and errors)'
set ylabel 'answers/s'
plot 'bypass-timeline.dat' u 1:($5-$6) w l lw 2 lc rgb '#d6604d' t 'bypass 2xx', '' u 1:6 w l lc rgb '#b2182b' dt 2 t 'bypass errors', 'cached-timeline.dat' u 1:($5-$6) w l lw 2 lc rgb '#4393c3' t 'cache 2xx', '' u 1:6 w l lc rgb '#2166ac' dt 2 t 'cache errors'
unset output

reset
set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'
set grid
set key outside right top noenhanced
set xlabel 'seconds since the start of the run'
set arrow from 1.000167239,graph 0 to 1.000167239,graph 1 nohead dt 3 lc rgb "#999999"
set label "1k, 800/s" at 1.000167239,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 91.012244268,graph 0 to 91.012244268,graph 1 nohead dt 3 lc rgb "#999999"
set label "5k, 800/s" at 91.012244268,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 181.01974798,graph 0 to 181.01974798,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 181.01974798,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 271.028028993,graph 0 to 271.028028993,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 1600/s" at 271.028028993,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 571.082450898,graph 0 to 571.082450898,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 571.082450898,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set output 'hit_ratio.svg'
set title 'Cache hit ratio per second (cache on)'
set ylabel 'hit ratio'
set yrange [0:1.05]
plot 'cached-metrics.dat' u 1:2 w l lw 2 lc rgb '#4393c3' t 'cache on', 0.6 w l dt 2 lc rgb '#999999' t 'target 0.6', 0.9 w l dt 3 lc rgb '#666666' t 'stretch 0.9'
unset output

reset
set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'
set grid
set key outside right top noenhanced
set xlabel 'seconds since the start of the run'
set arrow from 1.000167239,graph 0 to 1.000167239,graph 1 nohead dt 3 lc rgb "#999999"
set label "1k, 800/s" at 1.000167239,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 91.012244268,graph 0 to 91.012244268,graph 1 nohead dt 3 lc rgb "#999999"
set label "5k, 800/s" at 91.012244268,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 181.01974798,graph 0 to 181.01974798,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 181.01974798,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 271.028028993,graph 0 to 271.028028993,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 1600/s" at 271.028028993,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 571.082450898,graph 0 to 571.082450898,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 571.082450898,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set output 'queue_wait.svg'
set title 'Pool queue wait p95 per second (ms, from chatd_db_tx_queue_wait_seconds)'
set ylabel 'ms'
plot 'bypass-metrics.dat' u 1:3 w l lw 2 lc rgb '#d6604d' t 'bypass', 'cached-metrics.dat' u 1:3 w l lw 2 lc rgb '#4393c3' t 'cache on'
unset output

reset
set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'
set grid
set key outside right top noenhanced
set xlabel 'seconds since the start of the run'
set arrow from 1.000167239,graph 0 to 1.000167239,graph 1 nohead dt 3 lc rgb "#999999"
set label "1k, 800/s" at 1.000167239,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 91.012244268,graph 0 to 91.012244268,graph 1 nohead dt 3 lc rgb "#999999"
set label "5k, 800/s" at 91.012244268,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 181.01974798,graph 0 to 181.01974798,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 181.01974798,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 271.028028993,graph 0 to 271.028028993,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 1600/s" at 271.028028993,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set arrow from 571.082450898,graph 0 to 571.082450898,graph 1 nohead dt 3 lc rgb "#999999"
set label "10k, 800/s" at 571.082450898,graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced
set output 'db_qps.svg'
set title 'Database queries per second (chatd_db_queries_total)'
set ylabel 'queries/s'
plot 'bypass-metrics.dat' u 1:4 w l lw 2 lc rgb '#d6604d' t 'bypass', 'cached-metrics.dat' u 1:4 w l lw 2 lc rgb '#4393c3' t 'cache on'
unset output
