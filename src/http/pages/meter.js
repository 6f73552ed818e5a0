// PW-3: the live strength meter. The page works without it (the server names each failed
// rule when the form is sent); with it, each PW-1 rule and the zxcvbn score update as the
// holder types, from POST /v1/password/strength (which stores and logs nothing).
(function () {
  "use strict";
  var box = document.querySelector("[data-meter]");
  var input = document.getElementById("new_password");
  if (!box || !input || !window.fetch) { return; }
  var meter = document.getElementById("strength");
  var label = document.getElementById("strength-label");
  var labels = [0, 1, 2, 3, 4].map(function (n) { return box.getAttribute("data-l" + n) || ""; });
  var met = box.getAttribute("data-met") || "";
  var unmet = box.getAttribute("data-unmet") || "";
  var userField = document.getElementById("user_id");
  var timer = null;
  var asked = 0;
  function show(evaluation) {
    meter.value = evaluation.score;
    label.textContent = labels[evaluation.score] || "";
    evaluation.rules.forEach(function (rule) {
      var item = box.querySelector('[data-rule="' + rule.id + '"]');
      if (!item) { return; }
      item.setAttribute("data-met", rule.met ? "yes" : "no");
      item.querySelector(".state").textContent = rule.met ? "✓ " + met : "✗ " + unmet;
    });
  }
  function check() {
    var password = input.value;
    var mine = ++asked;
    if (!password) {
      meter.value = 0;
      label.textContent = "";
      return;
    }
    var body = { password: password, user_id: userField ? userField.value : (box.getAttribute("data-user-id") || null) };
    fetch("/v1/password/strength", {
      method: "POST",
      headers: { "content-type": "application/json" },
      credentials: "omit",
      body: JSON.stringify(body)
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (evaluation) {
      if (evaluation && mine === asked) { show(evaluation); }
    }).catch(function () {});
  }
  input.addEventListener("input", function () {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(check, 250);
  });
}());
