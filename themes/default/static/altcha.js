// Solves the proof-of-work challenge of public forms (ALTCHA "challenge v1"
// format) in the browser, without any third-party service.
//
// A form carries the challenge as JSON in data-challenge:
//   {"algorithm": "SHA-256", "challenge": "<hex>", "maxnumber": N,
//    "salt": "<salt>", "signature": "<hex>"}
// The solver looks for the number n in 0..N such that
// SHA-256(salt + n) == challenge, then puts base64(JSON{algorithm,
// challenge, number, salt, signature}) in the form's hidden input
// name="altcha". Submit buttons stay disabled until then; the element with
// data-challenge-status reports progress (aria-live) with the texts of its
// data-text-working / -done / -failed attributes.
(function () {
  "use strict";

  function hex(buffer) {
    var bytes = new Uint8Array(buffer);
    var out = "";
    for (var i = 0; i < bytes.length; i++) {
      out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return out;
  }

  function say(status, key) {
    if (status) {
      status.textContent = status.getAttribute("data-text-" + key) || "";
    }
  }

  function setButtons(form, disabled) {
    var buttons = form.querySelectorAll('button[type="submit"], input[type="submit"]');
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].disabled = disabled;
    }
  }

  // Tries numbers in batches of parallel digests; resolves to the number
  // whose hash matches, or -1 when none up to maxnumber does.
  async function search(spec) {
    var encoder = new TextEncoder();
    var batch = 256;
    for (var start = 0; start <= spec.maxnumber; start += batch) {
      var end = Math.min(start + batch - 1, spec.maxnumber);
      var pending = [];
      for (var n = start; n <= end; n++) {
        pending.push(crypto.subtle.digest("SHA-256", encoder.encode(spec.salt + n)));
      }
      var hashes = await Promise.all(pending);
      for (var j = 0; j < hashes.length; j++) {
        if (hex(hashes[j]) === spec.challenge) {
          return start + j;
        }
      }
    }
    return -1;
  }

  async function solve(form) {
    var input = form.querySelector('input[name="altcha"]');
    var status = form.querySelector("[data-challenge-status]");
    if (!input) {
      return;
    }
    setButtons(form, true);
    say(status, "working");
    try {
      var spec = JSON.parse(form.getAttribute("data-challenge"));
      if (spec.algorithm !== "SHA-256" || !window.crypto || !crypto.subtle) {
        throw new Error("unsupported");
      }
      var number = await search(spec);
      if (number < 0) {
        throw new Error("no solution");
      }
      input.value = btoa(JSON.stringify({
        algorithm: spec.algorithm,
        challenge: spec.challenge,
        number: number,
        salt: spec.salt,
        signature: spec.signature
      }));
      say(status, "done");
      setButtons(form, false);
    } catch (e) {
      say(status, "failed");
      // Let the user send anyway: the server answers with a readable page.
      setButtons(form, false);
    }
  }

  function start() {
    var forms = document.querySelectorAll("form[data-challenge]");
    for (var i = 0; i < forms.length; i++) {
      solve(forms[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
