// Starts Swagger UI (swagger-ui-dist, loaded before this file) on #swagger-ui with the OpenAPI
// document its data-spec names, relative to the page: the model server's page lives under a
// prefix it does not know (/m/<model>/ui). A file, not an inline script, so that the page works
// under a Content-Security-Policy of 'self' only.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (typeof window.SwaggerUIBundle !== "function") {
    root.textContent = "Swagger UI's files did not load: run scripts/web-assets.sh in Agora's " +
      "source tree (or 'make install'), then restart the server.";
    return;
  }
  window.ui = window.SwaggerUIBundle({
    url: new URL(root.dataset.spec, document.baseURI).href,
    domNode: root,
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,  // the default asks validator.swagger.io: nothing leaves the origin
  });
})();
