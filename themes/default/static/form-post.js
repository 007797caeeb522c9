// Form Post Response Mode: submits the response form as soon as the page is read.
document.getElementById('form-post').submit();
