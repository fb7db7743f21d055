// The live dashboard of lb_status?format=html. The server renders a plain table (what a
// browser without JavaScript shows); this script replaces it with charts and a peer table that
// it updates from the JSON of the same location every second. History (5 minutes) lives only
// in the page. Everything from the server is put in the page as text (textContent,
// setAttribute of plain attributes), never parsed as HTML. The page's Content-Security-Policy
// allows this script (by its hash), its style sheet, and requests to its own server only.
(function () {
  'use strict';
  var WINDOW = 300000;   // ms of history kept and drawn (at most)
  var MIN_SPAN = 60000;  // the charts show at least this much (less history: its right part)
  var MAX_ROWS = 200;    // peers listed per upstream (the rest: see the JSON)
  var MAX_LINES = 8;     // peers drawn per chart: the busiest ones
  var MAX_CHANGES = 50;  // state changes listed per upstream
  var COLOURS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#1f2328'];
  var DASHES = ['', '6 3', '2 2'];
  var STATE_FILL = {
    up: '#007a5a', unhealthy: '#c33c00', unavailable: '#e69f00', ejected: '#cc79a7',
    draining: '#56b4e9', checking: '#0072b2', down: '#555555'
  };
  var SVG = 'http://www.w3.org/2000/svg';

  var body = document.body;
  var api = body.getAttribute('data-api') || '';
  var dash = document.getElementById('dash');
  var note = document.getElementById('note');
  var mode = document.getElementById('mode');
  var query = new URLSearchParams(location.search);
  query.set('format', 'json');
  var jsonUrl = location.pathname + '?' + query.toString();
  // Maps keyed by names from the server have no prototype: an upstream may be called
  // "constructor" or "__proto__".
  function map() { return Object.create(null); }
  var ups = map();
  var every = 1000;      // ms between polls, as last set
  var polls = 0;
  var firstT = null;     // server time of the first answer
  var timer = null;
  var inflight = false;
  var again = false;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function clock(t) {
    var d = new Date(t);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return '-';
    return v.toFixed(v >= 100 ? 0 : digits);
  }
  function say(text, isError) {
    note.textContent = text;
    note.className = isError ? 'err' : '';
  }
  // A path segment for lb_api: the address keeps its ':' ("[::1]:80" goes as "%5B::1%5D:80").
  function seg(s) { return encodeURIComponent(s).replace(/%3A/gi, ':'); }

  // Why a peer is in its state, in words.
  function reason(p) {
    var h = p.health_checks;
    switch (p.state) {
      case 'draining': return 'drained through lb_api';
      case 'down': return p.admin === 'down' ? 'set down through lb_api' : 'down in the configuration';
      case 'ejected': return 'ejected by lb_outlier (ejection ' + p.ejections + ')';
      case 'unavailable': return 'passive failures (' + p.fails + ' in all)';
      case 'checking': return 'no check result yet';
      default: return h ? h.last_reason : (p.state === 'up' ? 'available' : p.state);
    }
  }

  // kind: 'http' or 'stream' (an http and a stream upstream may have the same name).
  function newUpstream(name, kind) {
    var U = { name: name, kind: kind, peers: map(), order: [], changes: [] };
    U.root = el('section', { 'class': 'u', 'data-upstream': name, 'data-kind': kind });
    var head = el('div');
    head.appendChild(el('h2', null, (kind === 'stream' ? 'stream upstream ' : 'upstream ') + name));
    U.sum = el('p', { 'class': 'sum' });
    head.appendChild(U.sum);
    U.root.appendChild(head);
    var charts = el('div', { 'class': 'charts' });
    U.spanEls = [];
    U.rate = chart(U, charts, 'requests/s per peer', 'rate');
    U.lat = chart(U, charts, 'response time per peer, ms (mean over each second, from the histogram)', 'latency');
    U.root.appendChild(charts);
    var table = el('table', { 'class': 'peers' });
    var cols = el('colgroup');
    ['c-peer', 'c-state', 'c-tl', 'c-n', 'c-n', 'c-n', 'c-n', 'c-why'].concat(api ? ['c-adm'] : [])
      .forEach(function (c) { cols.appendChild(el('col', { 'class': c })); });
    table.appendChild(cols);
    var tr = el('tr');
    ['peer', 'state', 'health over the charts\' span', 'req/s', 'ms', 'active', '5xx', 'last check']
      .concat(api ? ['weight · admin'] : [])
      .forEach(function (h, i) { tr.appendChild(el('th', { 'class': i < 3 || i === 7 ? 'l' : '', scope: 'col' }, h)); });
    var thead = el('thead');
    thead.appendChild(tr);
    table.appendChild(thead);
    U.tbody = el('tbody');
    table.appendChild(U.tbody);
    U.root.appendChild(table);
    U.more = el('p', { 'class': 'more' });
    U.root.appendChild(U.more);
    U.details = el('details', { open: '' });
    U.detailsSum = el('summary', null, 'state changes');
    U.details.appendChild(U.detailsSum);
    U.list = el('ol', { 'class': 'changes', reversed: '' });
    U.details.appendChild(U.list);
    U.root.appendChild(U.details);
    dash.appendChild(U.root);
    return U;
  }

  function chart(U, parent, caption, kind) {
    var fig = el('figure');
    var s = sv('svg', { 'class': 'chart ' + kind, viewBox: '0 0 600 150', role: 'img', 'aria-label': caption });
    fig.appendChild(s);
    var cap = el('figcaption', null, caption + ', last ');
    var span = el('span');
    cap.appendChild(span);
    U.spanEls.push(span);
    fig.appendChild(cap);
    parent.appendChild(fig);
    return s;
  }

  function newPeer(U, key, p) {
    var n = U.order.length;
    var P = {
      key: key, samples: [], state: null, since: null,
      colour: COLOURS[n % COLOURS.length], dash: DASHES[Math.floor(n / COLOURS.length) % DASHES.length]
    };
    U.peers[key] = P;
    U.order.push(key);
    return P;
  }

  function update(doc) {
    var now = doc.time;
    if (firstT === null) firstT = now;
    // The charts span the history there is, from a minute up to five.
    var span = Math.min(WINDOW, Math.max(MIN_SPAN, now - firstT));
    var seen = map();
    doc.upstreams.forEach(function (u) {
      var kind = u.kind || 'http';
      var key = kind + ' ' + u.name;
      seen[key] = true;
      var U = ups[key] || (ups[key] = newUpstream(u.name, kind));
      updateUpstream(U, u, now, span);
    });
    Object.keys(ups).forEach(function (name) {
      if (!seen[name]) { dash.removeChild(ups[name].root); delete ups[name]; }
    });
    mode.textContent = 'live: polled every ' + (every === 1000 ? 'second' : (every / 1000).toFixed(1) + ' s')
      + ', ' + clock(now) + ' (server time)';
    body.classList.add('live');
  }

  function updateUpstream(U, u, now, span) {
    var count = map();
    var keys = map();
    var present = map();
    u.peers.forEach(function (p, i) {
      count[p.state] = (count[p.state] || 0) + 1;
      var key = p.address;
      keys[key] = (keys[key] || 0) + 1;
      if (keys[key] > 1) key += '#' + keys[key];
      present[key] = true;
      var P = U.peers[key] || newPeer(U, key, p);
      P.peer = p;
      record(U, P, p, now);
      // Peers not listed keep no history (a large upstream would fill the browser's memory):
      // the last two samples give their rate, state changes are still listed.
      if (i >= MAX_ROWS && P.samples.length > 2) P.samples.splice(0, P.samples.length - 2);
    });
    // Peers gone from the upstream (lb_api, DNS, a reload) leave the page.
    U.order = U.order.filter(function (k) {
      if (present[k]) return true;
      var P = U.peers[k];
      if (P.row) U.tbody.removeChild(P.row);
      delete U.peers[k];
      return false;
    });

    var parts = [(count.up || 0) + ' of ' + u.peers.length + ' up'];
    Object.keys(count).sort().forEach(function (s) { if (s !== 'up') parts.push(count[s] + ' ' + s); });
    parts.push('method ' + u.method);
    var c = u.checks;
    parts.push(c ? 'checks ' + c.type + (c.uri ? ' ' + c.uri : '') + ' every ' + c.interval_ms + ' ms, rise ' + c.rise + ', fall ' + c.fall
      : 'no active checks');
    if (u.panic === true) parts.push('PANIC: fewer peers healthy than lb_panic asks, requests go to all');
    else if (u.panic === false) parts.push('no panic');
    U.sum.textContent = parts.join(' · ');
    U.sum.classList.toggle('err', u.panic === true);

    var from = now - span;
    var series = U.order.map(function (k) { return U.peers[k]; });
    var busiest = series.slice().sort(function (a, b) { return last(b.rate) - last(a.rate); }).slice(0, MAX_LINES);
    draw(U.rate, busiest, 'rate', from, now);
    draw(U.lat, busiest, 'lat', from, now);
    U.spanEls.forEach(function (e) { e.textContent = ago(span); });

    series.forEach(function (P, i) { if (i < MAX_ROWS) row(U, P, from, now); });
    U.more.textContent = series.length > MAX_ROWS
      ? (series.length - MAX_ROWS) + ' more peers are not listed (the JSON has them all)' : '';
    if (series.length > MAX_LINES) {
      U.more.textContent += (U.more.textContent ? '; ' : '') + 'the charts show the ' + MAX_LINES + ' busiest peers';
    }
    U.detailsSum.textContent = 'state changes seen (' + U.changes.length + ')';
  }

  function ago(ms) {
    return ms < 120000 ? Math.round(ms / 1000) + ' s' : Math.round(ms / 6000) / 10 + ' min';
  }

  function last(xs) {
    for (var i = xs.length - 1; i >= 0; i--) if (xs[i].v !== null) return xs[i].v;
    return -1;
  }

  // Adds this poll's sample of a peer: its counters, rates and state.
  function record(U, P, p, now) {
    var h = p.response_time_histogram;
    var s = { t: now, req: p.requests, hc: h ? h.count : null, hs: h ? h.sum : null, st: p.state, why: reason(p) };
    var prev = P.samples[P.samples.length - 1];
    if (prev && prev.t >= now) return;
    if (P.state !== p.state) {
      var lc = p.health_checks && p.health_checks.last_change;
      // Health-check changes carry their own time; others are placed at this poll.
      var at = lc && prev && lc > prev.t && lc <= now ? lc : now;
      if (P.state !== null) {
        U.changes.unshift({ t: at, peer: P.key, from: P.state, to: p.state, why: s.why });
        if (U.changes.length > MAX_CHANGES) U.changes.pop();
        var li = el('li');
        li.textContent = clock(at) + '  ' + P.key + '  ' + P.state + ' \u2192 ' + p.state + '  (' + s.why + ')';
        U.list.insertBefore(li, U.list.firstChild);
        while (U.list.childNodes.length > MAX_CHANGES) U.list.removeChild(U.list.lastChild);
      }
      // On the first poll only a check's last change says since when (up or unhealthy).
      var checked = p.state === 'up' || p.state === 'unhealthy';
      P.since = P.state === null ? (lc && checked ? lc : null) : at;
      P.state = p.state;
      s.t0 = at;
    }
    // An extra poll (after a click) less than 0.9 s after the last one replaces it: rates
    // are taken over about a second, not over a few milliseconds.
    var before = P.samples[P.samples.length - 2];
    if (prev && before && now - prev.t < 900 && prev.st === s.st) {
      if (prev.t0 !== undefined && s.t0 === undefined) s.t0 = prev.t0;
      P.samples.pop();
    }
    P.samples.push(s);
    while (P.samples.length > 2 && P.samples[1].t < now - WINDOW) P.samples.shift();
    var rate = [];
    var lat = [];
    for (var i = 1; i < P.samples.length; i++) {
      var a = P.samples[i - 1], b = P.samples[i];
      var dt = (b.t - a.t) / 1000;
      var dr = b.req - a.req;
      rate.push({ t: b.t, v: dt > 0 && dr >= 0 ? dr / dt : null });
      var dc = b.hc - a.hc;
      if (b.hc !== null && a.hc !== null && dc > 0) lat.push({ t: b.t, v: (b.hs - a.hs) / dc * 1000 });
      else if (b.hc === null && p.response_time_ms !== null) lat.push({ t: b.t, v: p.response_time_ms });
      else lat.push({ t: b.t, v: null });
    }
    P.rate = rate;
    P.lat = lat;
  }

  function nice(max) {
    if (!(max > 0)) return 1;
    var e = Math.pow(10, Math.floor(Math.log10(max)));
    var m = max / e;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * e;
  }

  // A line chart: x the last 5 minutes, one line per peer (its colour and dash as in its row).
  function draw(s, peers, which, from, now) {
    // Drawn in the chart's own pixels (up to 800), so that its text stays legible on a phone.
    var W = Math.round(Math.max(300, Math.min(800, s.clientWidth || 600)));
    s.setAttribute('viewBox', '0 0 ' + W + ' 150');
    var X0 = 44, X1 = W - 8, Y0 = 10, Y1 = 126;
    var max = 0;
    peers.forEach(function (P) {
      (P[which] || []).forEach(function (d) { if (d.v !== null && d.t >= from && d.v > max) max = d.v; });
    });
    var top = nice(max);
    var span = now - from;
    clear(s);
    var x = function (t) { return X0 + (t - from) / span * (X1 - X0); };
    var y = function (v) { return Y1 - v / top * (Y1 - Y0); };
    [0, 0.5, 1].forEach(function (f) {
      s.appendChild(sv('line', { x1: X0, x2: X1, y1: y(f * top), y2: y(f * top), stroke: '#d0d7de' }));
      s.appendChild(sv('text', { x: X0 - 4, y: y(f * top) + 4, 'text-anchor': 'end' }, fmt(f * top, top < 10 ? 1 : 0)));
    });
    [[from, '-' + ago(span)], [from + span / 2, '-' + ago(span / 2)], [now, 'now']].forEach(function (l, i) {
      s.appendChild(sv('text', { x: x(l[0]), y: 144, 'text-anchor': ['start', 'middle', 'end'][i] }, l[1]));
    });
    peers.forEach(function (P) {
      var d = '';
      var pen = 'M';
      (P[which] || []).forEach(function (p) {
        if (p.v === null || p.t < from) { pen = 'M'; return; }
        d += pen + x(p.t).toFixed(1) + ' ' + y(p.v).toFixed(1) + ' ';
        pen = 'L';
      });
      if (!d) return;
      var path = sv('path', { d: d, fill: 'none', stroke: P.colour, 'stroke-width': 2, 'stroke-dasharray': P.dash, 'data-peer': P.key });
      path.appendChild(sv('title', null, P.key));
      s.appendChild(path);
    });
  }

  // The coloured bands of a peer's states over the window, each with its times and reason.
  function timeline(P, from, now) {
    var s = P.tl;
    clear(s);
    var W = 300;
    var x = function (t) { return Math.max(0, (t - from) / (now - from) * W); };
    var runs = [];
    P.samples.forEach(function (smp, i) {
      var r = runs[runs.length - 1];
      if (r && r.st === smp.st) { r.end = smp.t; return; }
      var start = smp.t0 !== undefined ? smp.t0 : smp.t;
      if (i === 0 && P.since) start = Math.max(P.since, from);
      if (r) r.end = start;
      runs.push({ st: smp.st, why: smp.why, start: start, end: smp.t });
    });
    runs.forEach(function (r) {
      var x0 = x(r.start);
      var w = Math.max(1.5, x(Math.max(r.end, r.start)) - x0);
      var rect = sv('rect', { x: x0.toFixed(1), y: 0, width: w.toFixed(1), height: 14, fill: STATE_FILL[r.st] || '#999', 'data-state': r.st });
      rect.appendChild(sv('title', null, r.st + ' ' + clock(r.start) + '\u2013' + clock(r.end) + ' (' + r.why + ')'));
      s.appendChild(rect);
    });
  }

  function cell(tr, cls, label) {
    var td = el('td', { 'class': cls || '' });
    if (label) td.setAttribute('data-l', label);
    tr.appendChild(td);
    return td;
  }

  function row(U, P, from, now) {
    var p = P.peer;
    if (!P.row) {
      var tr = el('tr', { 'class': 'peer', 'data-address': P.key });
      var who = cell(tr, 'l');
      var sw = sv('svg', { 'class': 'sw', viewBox: '0 0 22 10', 'aria-hidden': 'true' });
      sw.appendChild(sv('line', { x1: 0, x2: 22, y1: 5, y2: 5, stroke: P.colour, 'stroke-width': 3, 'stroke-dasharray': P.dash }));
      who.appendChild(sw);
      P.name = el('span', { 'class': 'name' });
      who.appendChild(P.name);
      P.addr = el('div', { 'class': 'addr' });
      who.appendChild(P.addr);
      var st = cell(tr, 'l', 'state');
      P.badge = el('span', { 'class': 'st state' });
      st.appendChild(P.badge);
      P.sinceEl = el('span', { 'class': 'since' });
      st.appendChild(P.sinceEl);
      var tl = cell(tr, 'l', 'health');
      P.tl = sv('svg', { 'class': 'tl', viewBox: '0 0 300 14', preserveAspectRatio: 'none', role: 'img' });
      tl.appendChild(P.tl);
      P.rateEl = cell(tr, 'rate', 'req/s');
      P.latEl = cell(tr, 'lat', 'ms');
      P.activeEl = cell(tr, 'active', 'active');
      P.errEl = cell(tr, 'x5', '5xx');
      P.whyEl = cell(tr, 'l why', 'last check');
      if (api) adminCell(U, P, cell(tr, 'l adm', 'admin'));
      P.row = tr;
    }
    if (P.row.parentNode !== U.tbody || U.tbody.lastChild !== P.row) U.tbody.appendChild(P.row);
    var flags = [];
    if (p.backup) flags.push('backup');
    if (p.source === 'dns') flags.push('resolved');
    if (p.source === 'api') flags.push('added');
    P.name.textContent = p.name + (flags.length ? ' (' + flags.join(', ') + ')' : '');
    P.addr.textContent = p.address === p.name ? '' : p.address;
    P.badge.textContent = p.state;
    P.badge.className = 'st state s-' + p.state;
    P.sinceEl.textContent = (P.since ? 'since ' + clock(P.since) + ': ' : '') + reason(p);
    timeline(P, from, now);
    P.tl.setAttribute('aria-label', p.state + (P.since ? ' since ' + clock(P.since) : ''));
    P.rateEl.textContent = fmt(P.rate.length ? P.rate[P.rate.length - 1].v : null, 1);
    var lat = P.lat.length ? P.lat[P.lat.length - 1].v : null;
    P.latEl.textContent = fmt(lat !== null ? lat : p.response_time_ms, 1);
    P.activeEl.textContent = p.active;
    P.errEl.textContent = p.responses['5xx'];
    P.whyEl.textContent = p.health_checks ? p.health_checks.last_reason + ' (' + p.health_checks.checks + ' checks)' : '-';
    if (P.weight && document.activeElement !== P.weight && !P.weight.dataset.dirty) P.weight.value = p.weight;
    if (P.buttons) {
      Object.keys(P.buttons).forEach(function (a) { P.buttons[a].disabled = p.admin === a; });
    }
  }

  function adminCell(U, P, td) {
    P.weight = el('input', { type: 'number', min: 1, max: 10000, 'aria-label': 'weight of ' + P.key, 'class': 'weight' });
    P.weight.addEventListener('input', function () { P.weight.dataset.dirty = '1'; });
    var set = el('button', { type: 'button', 'class': 'set-weight' }, 'set');
    set.addEventListener('click', function () {
      var w = parseInt(P.weight.value, 10);
      if (!(w >= 1 && w <= 10000)) { say('weight of ' + P.key + ': a whole number from 1 to 10000', true); return; }
      delete P.weight.dataset.dirty;
      act(U, P, { weight: w }, 'weight ' + w);
    });
    td.appendChild(P.weight);
    td.appendChild(set);
    td.appendChild(el('br'));
    P.buttons = {};
    [['drain', 'drain'], ['down', 'down'], ['up', 'up']].forEach(function (b) {
      var btn = el('button', { type: 'button', 'class': 'admin-' + b[0], 'data-admin': b[0] }, b[1]);
      btn.addEventListener('click', function () { act(U, P, { admin: b[0] }, b[1]); });
      P.buttons[b[0]] = btn;
      td.appendChild(btn);
    });
  }

  // A PATCH to lb_api for one peer; the page shows the answer and polls at once.
  function act(U, P, change, label) {
    var addr = P.peer.address;
    var path = api + 'upstreams/' + seg(U.name) + '/peers/' + seg(addr)
      + (U.kind === 'stream' ? '?kind=stream' : '');
    say(label + ' ' + addr + ' \u2026');
    fetch(path, {
      method: 'PATCH', cache: 'no-store', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(change)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error((j && j.error) || 'HTTP ' + r.status);
      });
    }).then(function () {
      say(label + ' ' + addr + ': done');
      soon();
    }).catch(function (e) {
      say(label + ' ' + addr + ' failed: ' + e.message, true);
    });
  }

  function soon() {
    if (inflight) { again = true; return; }
    clearTimeout(timer);
    poll();
  }

  function poll() {
    inflight = true;
    var t0 = Date.now();
    fetch(jsonUrl, { cache: 'no-store', credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (doc) {
        update(doc);
        polls++;
        body.setAttribute('data-polls', String(polls));
        if (note.className === 'err' && /^update failed/.test(note.textContent)) say('');
      })
      .catch(function (e) { say('update failed: ' + e.message + ' (trying again)', true); })
      .then(function () {
        inflight = false;
        // A large status answer is asked for less often: at most a fifth of the time fetching.
        every = Math.max(1000, Math.round(5 * (Date.now() - t0) / 100) * 100);
        var wait = again ? 0 : every;
        again = false;
        timer = setTimeout(poll, wait);
      });
  }

  document.getElementById('ro').textContent = api
    ? 'admin: drain / down / up and weight call lb_api at ' + api
    : 'read-only: this lb_status names no lb_api (lb_status api=/path/; with an lb_api write=on location there adds drain / down / up buttons)';
  poll();
})();
