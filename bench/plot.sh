#!/bin/bash
# plot.sh DATADIR OUTDIR: the PNG plots of a bench/run.sh run (gnuplot), from the
# .dat files bench/report.awk wrote: pingpong.png, stream.png, speedup.png.
set -u
D=$1 O=$2
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot missing (tools/deps.sh bench)" >&2; exit 1; }
term="pngcairo size 900,560 font 'sans,10'"
gnuplot -e "set terminal $term" -e "set output '/dev/null'" 2>/dev/null || term="png size 900,560"

# one plot clause per variant: median with min-max bars (.dat: bytes, then med lo hi per variant)
curves() {
  local f=$1 j=0 n out=""
  for n in "plain TCP" "plain unix" "shim TCP" "shim unix" "ring (spin+sleep)" "ring (pure spin)"; do
    j=$((j + 1))
    out="$out${out:+, }'$f' using 1:$((3 * j - 1)):$((3 * j)):$((3 * j + 1)) with yerrorlines lw 2 title '$n'"
  done
  echo "$out"
}
common="set terminal $term; set termoption noenhanced; set grid; set key top left; set logscale x 2; set logscale y 10;
  set xtics ('64' 64, '512' 512, '1K' 1024, '4K' 4096, '16K' 16384, '64K' 65536, '256K' 262144, '1M' 1048576, '4M' 4194304)"
rc=0
if [ -s "$D/pp.dat" ]; then
  gnuplot -e "$common; set output '$O/pingpong.png';
    set title 'Ping-pong round trip, median (bars: min-max over repetitions)'; set xlabel 'message size (bytes)'; set ylabel 'µs (log)';
    plot $(curves "$D/pp.dat")" || rc=1
fi
if [ -s "$D/stream.dat" ]; then
  gnuplot -e "$common; set output '$O/stream.png'; set key bottom right;
    set title 'One-way streaming throughput, median (bars: min-max)'; set xlabel 'write size (bytes)'; set ylabel 'MB/s (log)';
    plot $(curves "$D/stream.dat")" || rc=1
fi
if [ -s "$D/speedup.dat" ]; then
  gnuplot -e "set terminal $term; set termoption noenhanced; set output '$O/speedup.png'; set grid ytics; set logscale y 10;
    set title 'shim / plain, side by side in one run (bars: measured, green when the target is met; dots: target)';
    set ylabel 'ratio (log)'; set style fill solid 0.6; set boxwidth 0.7; set xtics rotate by -40; set key top right;
    set yrange [0.01:200];
    plot '$D/speedup.dat' using 0:3:(\$3 >= \$4 ? 0x2ca02c : 0xd62728):xtic(2) with boxes lc rgb variable title 'measured',
      '' using 0:4 with points pt 7 ps 1.5 lc rgb 'black' title 'target', 1 with lines lc rgb 'gray' notitle" || rc=1
fi
exit $rc
