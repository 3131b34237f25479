// awe web: the RA/Dec readout on previews (the linear TAN part of the frame's WCS, passed by the server).
(function () {
  "use strict";
  function deg(r) { return r * 180 / Math.PI; }
  function rad(d) { return d * Math.PI / 180; }
  function sky(w, x, y) {
    // x, y: 1-based FITS pixel; returns [ra, dec] in degrees (gnomonic projection)
    var dx = x - w.crpix[0], dy = y - w.crpix[1];
    var xi = rad(w.cd[0][0] * dx + w.cd[0][1] * dy), eta = rad(w.cd[1][0] * dx + w.cd[1][1] * dy);
    var ra0 = rad(w.crval[0]), dec0 = rad(w.crval[1]);
    var den = Math.cos(dec0) - eta * Math.sin(dec0);
    var ra = ra0 + Math.atan2(xi, den);
    var dec = Math.atan2(Math.sin(dec0) + eta * Math.cos(dec0), Math.sqrt(xi * xi + den * den));
    ra = deg(ra) % 360; if (ra < 0) { ra += 360; }
    return [ra, deg(dec)];
  }
  function sexagesimal(v, hours) {
    var sign = v < 0 ? "-" : (hours ? "" : "+");
    v = Math.abs(hours ? v / 15 : v);
    var a = Math.floor(v), b = Math.floor((v - a) * 60), c = ((v - a) * 60 - b) * 60;
    return sign + String(a).padStart(2, "0") + ":" + String(b).padStart(2, "0") + ":" + c.toFixed(hours ? 2 : 1).padStart(hours ? 5 : 4, "0");
  }
  function setup(img) {
    var out = document.getElementById("readout");
    fetch(img.dataset.infoUrl, {credentials: "same-origin"}).then(function (resp) {
      var info = JSON.parse(resp.headers.get("x-awe-preview") || "null");
      return resp.blob().then(function (blob) {
        img.src = URL.createObjectURL(blob);
        img.dataset.ready = "1";
        img.addEventListener("mousemove", function (ev) {
          if (!info) { return; }
          var r = img.getBoundingClientRect();
          var nxb = Math.ceil(info.nx / info.step), nyb = Math.ceil(info.ny / info.step);
          var bx = (ev.clientX - r.left) * nxb / r.width, by = (ev.clientY - r.top) * nyb / r.height;
          var x = bx * info.step + 0.5, y = (nyb - by) * info.step + 0.5;  // 1-based FITS pixel
          var text = "x " + x.toFixed(1) + ", y " + y.toFixed(1);
          if (info.wcs) {
            var s = sky(info.wcs, x, y);
            text += "  RA " + s[0].toFixed(5) + " (" + sexagesimal(s[0], true) + ")  Dec " + s[1].toFixed(5) +
              " (" + sexagesimal(s[1], false) + ")";
          } else { text += "  (no WCS in the header)"; }
          out.textContent = text;
        });
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var img = document.getElementById("preview");
    if (img) { setup(img); }
  });
  window.aweSky = sky;
})();
