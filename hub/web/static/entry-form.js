// Third Sector entry form: checks the tax code in the page before submit
// (the server checks again) and shows birth year / sex only without a tax code.
// Works without this script too: then every field is shown and the server checks.
(function () {
  "use strict";
  var script = document.currentScript;
  var form = document.getElementById("entry-form");
  if (!form || !script) return;
  var input = document.getElementById("identifier");
  var live = document.getElementById("identifier-live");
  var group = document.getElementById("identifier-group");
  var noCf = document.getElementById("no-cf-fields");
  var ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
  var CF = /^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$/;
  var STP = /^(STP|ENI)[0-9]{13}$/;

  function value(c) { // position in the alphabet for letters, the digit's value for digits
    return c >= "0" && c <= "9" ? c.charCodeAt(0) - 48 : c.charCodeAt(0) - 65;
  }
  function checkChar(first15) {
    var sum = 0;
    for (var i = 0; i < 15; i++) {
      var v = value(first15[i]);
      sum += (i % 2 === 0) ? ODD[v] : v;
    }
    return String.fromCharCode(65 + (sum % 26));
  }
  function kind() {
    var k = form.querySelector("input[name=identifier_kind]:checked");
    return k ? k.value : "cf";
  }
  function problem() {
    var code = input.value.replace(/\s+/g, "").toUpperCase();
    var k = kind();
    if (k === "none" || k === "keep" || code === "") return "";
    if (k === "stp_eni") return STP.test(code) ? "" : script.dataset.msgStp;
    if (!CF.test(code)) return script.dataset.msgFormat;
    return checkChar(code.slice(0, 15)) === code[15] ? "" : script.dataset.msgCheck;
  }
  function show(msg) {
    live.textContent = msg;
    input.classList.toggle("is-invalid", msg !== "");
    live.classList.toggle("d-block", msg !== "");
    input.setAttribute("aria-invalid", msg !== "" ? "true" : "false");
  }
  function sync() {
    var k = kind();
    group.hidden = (k === "none" || k === "keep");
    noCf.hidden = (k === "cf" || (k === "keep" && form.dataset.keepAsksBirth !== "1"));
    if (k === "none" || k === "keep") { input.value = ""; show(""); }
  }
  form.addEventListener("change", function (ev) {
    if (ev.target.name === "identifier_kind") sync();
  });
  input.addEventListener("blur", function () { show(problem()); });
  input.addEventListener("input", function () {
    if (input.value.replace(/\s+/g, "").length >= 16) show(problem()); else show("");
  });
  form.addEventListener("submit", function (ev) {
    var msg = problem();
    if (msg) { ev.preventDefault(); show(msg); input.focus(); }
  });
  sync();
})();
