// Front-channel logout: once every client's iframe loaded (or after 3 s),
// goes on to the page after logout.
(function () {
  var box = document.getElementById('logout-frames');
  if (!box) { return; }
  var target = box.getAttribute('data-continue');
  var frames = box.querySelectorAll('iframe');
  var left = frames.length;
  var gone = false;
  function next() {
    if (!gone) { gone = true; window.location.assign(target); }
  }
  frames.forEach(function (f) {
    f.addEventListener('load', function () { left -= 1; if (left <= 0) { next(); } });
  });
  if (left === 0) { next(); }
  setTimeout(next, 3000);
})();
