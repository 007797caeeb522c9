// Password rules and strength meter of new-password fields: no framework, no
// inline script (the CSP allows scripts from the theme's assets only).
//
// An input opts in with data-password-meter="<id>", the id of the element
// the password_rules.html partial renders. Each rule of its list carries
// data-rule (the message id, e.g. "password.rule.length") and its parameters
// (data-min, data-max, data-allowed). As the user types, the rules this
// script can check get data-met="true" or "false" and a mark, and the
// element with data-password-strength shows "<label> <weak|medium|strong>"
// with the page's texts (its data-text-* attributes), announced politely.
// The levels follow PasswordPolicy::strength: weak unless every checkable
// rule passes and the password has 8 characters; strong from 10 characters
// with 3 kinds of characters. The server checks again: only it knows the
// common-password list and the account's email and customer identifier.
(function () {
  "use strict";

  var LOWER = /\p{Lowercase}/u;
  var UPPER = /\p{Uppercase}/u;
  var DIGIT = /\p{N}/u;
  var SPECIAL = /[^\p{Alphabetic}\p{N}]/u;

  function chars(text) {
    return Array.from(text);
  }

  function specials(text) {
    return chars(text).filter(function (c) {
      return SPECIAL.test(c);
    });
  }

  function number(rule, name, fallback) {
    var value = parseInt(rule.getAttribute("data-" + name), 10);
    return isNaN(value) ? fallback : value;
  }

  // true or false for the rules that can be checked here, null otherwise.
  function meets(rule, password) {
    var allowed = chars(rule.getAttribute("data-allowed") || "");
    var length = chars(password).length;
    switch (rule.getAttribute("data-rule")) {
      case "password.rule.length":
        return length >= number(rule, "min", 8) && length <= number(rule, "max", Infinity);
      case "password.rule.lowercase":
        return LOWER.test(password);
      case "password.rule.uppercase":
        return UPPER.test(password);
      case "password.rule.digit":
        return DIGIT.test(password);
      case "password.rule.special":
        return SPECIAL.test(password);
      case "password.rule.special_among":
        return specials(password).some(function (c) {
          return allowed.indexOf(c) !== -1;
        }) && specials(password).every(function (c) {
          return allowed.indexOf(c) !== -1;
        });
      case "password.rule.special_only":
        return specials(password).every(function (c) {
          return allowed.indexOf(c) !== -1;
        });
      case "password.rule.no_special":
        return specials(password).length === 0;
      default:
        return null;
    }
  }

  function strength(password, allMet) {
    var length = chars(password).length;
    if (length < 8 || !allMet) {
      return "weak";
    }
    var kinds = [LOWER, UPPER, DIGIT, SPECIAL].filter(function (kind) {
      return kind.test(password);
    }).length;
    return length >= 10 && kinds >= 3 ? "strong" : "medium";
  }

  var LEVELS = { weak: 1, medium: 2, strong: 3 };

  function update(input, box) {
    var password = input.value;
    var allMet = true;
    Array.prototype.forEach.call(box.querySelectorAll("[data-rule]"), function (rule) {
      var met = password === "" ? null : meets(rule, password);
      var mark = rule.querySelector(".password-rules__mark");
      if (met === null) {
        rule.removeAttribute("data-met");
        if (mark) {
          mark.textContent = "";
        }
        return;
      }
      rule.setAttribute("data-met", met ? "true" : "false");
      if (mark) {
        mark.textContent = met ? "\u2713 " : "\u2717 ";
      }
      allMet = allMet && met;
    });
    var meter = box.querySelector("[data-password-strength]");
    if (!meter) {
      return;
    }
    if (password === "") {
      meter.hidden = true;
      return;
    }
    var level = strength(password, allMet);
    var text = meter.querySelector(".password-meter__text") || meter;
    var label = meter.getAttribute("data-text-label") || "";
    var name = meter.getAttribute("data-text-" + level) || level;
    var wanted = (label ? label + " " : "") + name;
    // Announce only changes of level, not every keystroke.
    if (text.textContent !== wanted) {
      text.textContent = wanted;
    }
    var bar = meter.querySelector("meter");
    if (bar) {
      bar.value = LEVELS[level];
    }
    meter.setAttribute("data-level", level);
    meter.hidden = false;
  }

  function init() {
    Array.prototype.forEach.call(
      document.querySelectorAll("input[data-password-meter]"),
      function (input) {
        var box = document.getElementById(input.getAttribute("data-password-meter"));
        if (!box) {
          return;
        }
        input.addEventListener("input", function () {
          update(input, box);
        });
        update(input, box);
      }
    );
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
