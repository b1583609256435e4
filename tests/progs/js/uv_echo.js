// libuv (node) echo over TCP, for tests/preload/libuv.sh. libuv closes sockets with
// a raw close system call, so connection numbers are reused behind the shim's back.
//   node uv_echo.js server PORT N   echoes N connections, then exits
//   node uv_echo.js client PORT N   N connections, 8 at a time, each sends 50-150 KB
//                                   and checks the echo's sha256; exit 1 on any mismatch
'use strict';
const net = require('net');
const crypto = require('crypto');
const [role, port, n] = [process.argv[2], +process.argv[3], +process.argv[4]];
if (role === 'server') {
  let closed = 0;
  const s = net.createServer(c => {
    c.on('data', d => c.write(d));
    c.on('end', () => c.end());
    c.on('error', e => { console.error('server:', e.message); process.exitCode = 1; });
    c.on('close', () => { if (++closed === n) s.close(); });
  });
  s.listen(port, '127.0.0.1', () => console.log('ready'));
} else {
  let started = 0, finished = 0, bad = 0;
  const finish = () => {
    if (++finished === n) {
      console.log(`client: ${n} connections, ${bad} bad`);
      process.exit(bad ? 1 : 0);
    }
    one();
  };
  const one = () => {
    if (started >= n) return;
    started++;
    const data = crypto.randomBytes(50000 + Math.floor(Math.random() * 100000));
    const want = crypto.createHash('sha256').update(data).digest('hex');
    const h = crypto.createHash('sha256');
    let got = 0;
    const c = net.connect(port, '127.0.0.1', () => c.end(data));
    c.on('data', d => { h.update(d); got += d.length; });
    c.on('end', () => {
      if (h.digest('hex') !== want) { bad++; console.error(`client: ${got} bytes back of ${data.length}, sha256 differs`); }
      c.destroy();
      finish();
    });
    c.on('error', e => { bad++; console.error('client:', e.message); finish(); });
  };
  for (let i = 0; i < 8; i++) one();
}
