// WebAuthn in the login pages: no framework, no inline script (the CSP allows
// scripts from the theme's assets only).
//
// A page opts in with a form carrying data-webauthn="get" (sign in with a key)
// or data-webauthn="create" (set up a key), a hidden "credential" field, and a
// <script type="application/json" id="webauthn-options"> block holding the
// options the server made (a data block: browsers never run it). On submit,
// the options' binary fields are decoded from base64url, the browser asks the
// authenticator, and the result goes into the "credential" field as JSON with
// base64url binary fields, the shape the server's WebAuthn library reads.
// Errors are shown in #webauthn-message with the page's translated texts
// (data-message-* attributes of the form).
(function () {
  "use strict";

  function fromBase64Url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4 !== 0) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64Url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeDescriptors(list) {
    return (list || []).map(function (descriptor) {
      var copy = Object.assign({}, descriptor);
      copy.id = fromBase64Url(descriptor.id);
      return copy;
    });
  }

  function creationOptions(options) {
    var publicKey = Object.assign({}, options.publicKey);
    publicKey.challenge = fromBase64Url(publicKey.challenge);
    publicKey.user = Object.assign({}, publicKey.user, {
      id: fromBase64Url(publicKey.user.id)
    });
    if (publicKey.excludeCredentials) {
      publicKey.excludeCredentials = decodeDescriptors(publicKey.excludeCredentials);
    }
    // Chromium refuses (NotSupportedError) a credProtect policy of
    // "userVerificationRequired" unless user verification is "required". The
    // security-key ceremonies ask for it with "preferred" and do not enforce
    // it, so it is dropped there: the key then enrolls, with the
    // authenticator's default protection.
    var selection = publicKey.authenticatorSelection || {};
    var extensions = publicKey.extensions;
    if (extensions && extensions.credentialProtectionPolicy === "userVerificationRequired" &&
        selection.userVerification !== "required" && !extensions.enforceCredentialProtectionPolicy) {
      extensions = Object.assign({}, extensions);
      delete extensions.credentialProtectionPolicy;
      delete extensions.enforceCredentialProtectionPolicy;
      publicKey.extensions = extensions;
    }
    return { publicKey: publicKey };
  }

  function requestOptions(options) {
    var publicKey = Object.assign({}, options.publicKey);
    publicKey.challenge = fromBase64Url(publicKey.challenge);
    publicKey.allowCredentials = decodeDescriptors(publicKey.allowCredentials);
    return { publicKey: publicKey };
  }

  // Only the client extension results the server reads, as plain JSON.
  function extensionResults(credential) {
    var all = credential.getClientExtensionResults ? credential.getClientExtensionResults() : {};
    var kept = {};
    if (typeof all.appid === "boolean") {
      kept.appid = all.appid;
    }
    if (all.credProps && typeof all.credProps.rk === "boolean") {
      kept.credProps = { rk: all.credProps.rk };
    }
    return kept;
  }

  function encodeCreated(credential) {
    var response = credential.response;
    var encoded = {
      attestationObject: toBase64Url(response.attestationObject),
      clientDataJSON: toBase64Url(response.clientDataJSON)
    };
    if (typeof response.getTransports === "function") {
      encoded.transports = response.getTransports();
    }
    return {
      id: credential.id,
      rawId: toBase64Url(credential.rawId),
      type: credential.type,
      response: encoded,
      extensions: extensionResults(credential)
    };
  }

  function encodeAssertion(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64Url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toBase64Url(response.authenticatorData),
        clientDataJSON: toBase64Url(response.clientDataJSON),
        signature: toBase64Url(response.signature),
        userHandle: response.userHandle ? toBase64Url(response.userHandle) : null
      },
      extensions: extensionResults(credential)
    };
  }

  function showMessage(form, text) {
    var box = document.getElementById("webauthn-message");
    if (!box) {
      return;
    }
    box.textContent = text;
    box.hidden = false;
    box.setAttribute("tabindex", "-1");
    box.focus();
  }

  function setBusy(form, busy) {
    var buttons = form.querySelectorAll("button[type=submit]");
    for (var i = 0; i < buttons.length; i += 1) {
      buttons[i].disabled = busy;
    }
    form.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function start(form) {
    var mode = form.getAttribute("data-webauthn");
    var field = form.querySelector("input[name=credential]");
    var block = document.getElementById("webauthn-options");
    if (!field || !block || (mode !== "get" && mode !== "create")) {
      return;
    }
    form.addEventListener("submit", function (event) {
      if (field.value) {
        return; // The credential is in: let the form go.
      }
      event.preventDefault();
      if (!window.PublicKeyCredential || !navigator.credentials) {
        showMessage(form, form.getAttribute("data-message-unsupported"));
        return;
      }
      var options;
      try {
        options = JSON.parse(block.textContent);
      } catch (error) {
        showMessage(form, form.getAttribute("data-message-failed"));
        return;
      }
      setBusy(form, true);
      var ceremony = mode === "create"
        ? navigator.credentials.create(creationOptions(options)).then(encodeCreated)
        : navigator.credentials.get(requestOptions(options)).then(encodeAssertion);
      ceremony.then(function (credential) {
        field.value = JSON.stringify(credential);
        form.submit();
      }, function (error) {
        setBusy(form, false);
        var name = error && error.name;
        var message = "data-message-failed";
        if (name === "NotAllowedError" || name === "AbortError") {
          message = "data-message-cancelled";
        } else if (name === "InvalidStateError" && mode === "create") {
          message = "data-message-exists"; // excludeCredentials matched
        }
        showMessage(form, form.getAttribute(message) || form.getAttribute("data-message-failed"));
      });
    });
  }

  var forms = document.querySelectorAll("form[data-webauthn]");
  for (var i = 0; i < forms.length; i += 1) {
    start(forms[i]);
  }
})();
