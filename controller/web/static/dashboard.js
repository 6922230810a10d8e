// Gitfleet dashboard: refresh the page's live part every few seconds.
// Without this script every page still shows the same data on reload.
(function () {
  'use strict';
  var live = document.getElementById('live');
  var status = document.getElementById('live-status');
  if (!live || !live.dataset.interval) return;
  var interval = Math.max(1000, parseInt(live.dataset.interval, 10) || 2000);
  var busy = false;

  function say(text, failed) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle('failed', !!failed);
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    // <details> the reader opened stay open.
    var open = {};
    live.querySelectorAll('details[open][data-key]').forEach(function (d) { open[d.dataset.key] = true; });
    fetch(location.pathname + location.search, {
      headers: { 'X-Gitfleet-Fragment': '1' },
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error'
    }).then(function (resp) {
      if (resp.status === 401) { location.reload(); return null; }
      if (!resp.ok && resp.status !== 404 && resp.status !== 400) throw new Error('HTTP ' + resp.status);
      return resp.text();
    }).then(function (html) {
      if (html === null) return;
      var doc = new DOMParser().parseFromString(html, 'text/html');
      live.replaceChildren.apply(live, Array.prototype.slice.call(doc.body.childNodes));
      live.querySelectorAll('details[data-key]').forEach(function (d) { if (open[d.dataset.key]) d.open = true; });
      var stamp = live.querySelector('[data-now]');
      say('live · updated ' + (stamp ? stamp.dataset.now : new Date().toISOString()), false);
    }).catch(function (err) {
      say('live updates failing (' + err.message + '); retrying', true);
    }).finally(function () { busy = false; });
  }

  setInterval(refresh, interval);
  document.addEventListener('visibilitychange', function () { if (!document.hidden) refresh(); });
})();
